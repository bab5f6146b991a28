#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in synthetic dataset, tiny CPU configs.
# Every step is a plain `dawn-train` command you can run yourself.
set -euo pipefail
OUT=${DEMO_OUT:-demo_out}
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/4 synthetic talking heads -> $OUT/raw"
dawn-train data synth --out "$OUT/raw" --videos 16 --seconds 4 --size 64 --seed 0

step "2/4 WebDataset shards -> $OUT/shards"
dawn-train data shards --src "$OUT/raw" --out "$OUT/shards" --val-fraction 0.125 --samples-per-shard 2

step "3/4 validate every sample"
dawn-train data inspect "$OUT/shards"

step "4/4 loader benchmark (A2V clips of 40 frames, 1 worker)"
dawn-train bench loader --shards "$OUT/shards" --stage a2v --clip-len 40 --workers 1 --batches 20

printf '\nDemo outputs:\n  prepared videos  %s/raw\n  shards+manifest  %s/shards\n' "$OUT" "$OUT"
