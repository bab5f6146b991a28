#!/usr/bin/env bash
# `make demo`: the whole DAWN pipeline on the built-in synthetic dataset with tiny CPU configs:
# data -> LFG -> PBNet -> A2V-FDM (two-stage curriculum) -> generation -> metrics -> report.
# Every step is a plain `dawn-train` command you can run yourself; runs land in runs/<name>/.
set -euo pipefail
OUT=${DEMO_OUT:-demo_out}
export WANDB_MODE=${WANDB_MODE:-offline}
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# A second demo starts over: a fresh `fit` refuses a run folder that already holds a run, so the runs and
# outputs of a previous demo go first.  The data stays: synth and shards reuse what matches their options.
RUNS=(runs/lfg-demo runs/pbnet-pose-demo runs/pbnet-blink-demo runs/a2v-demo-stage1 runs/a2v-demo-stage2)
echo "removing the previous demo's runs and outputs, if any: ${RUNS[*]} $OUT/{portrait.png,generated.mp4,frames.png,report,probe.pt}"
rm -rf "${RUNS[@]}" "$OUT/portrait.png" "$OUT/generated.mp4" "$OUT/frames.png" "$OUT/report" "$OUT/probe.pt"
QUIET=(--trainer.enable_model_summary=false)
DEMO=(-c experiments/base.yaml -c experiments/demo/base.yaml)   # every demo run: base + tiny CPU settings

step "1/10 synthetic talking heads -> $OUT/raw"
dawn-train data synth --out "$OUT/raw" --videos 32 --seconds 4 --size 64 --seed 0

step "2/10 WebDataset shards -> $OUT/shards"
dawn-train data shards --src "$OUT/raw" --out "$OUT/shards" --val-fraction 0.125 --samples-per-shard 4

step "3/10 validate every sample"
dawn-train data inspect "$OUT/shards"

step "4/10 loader benchmark (A2V clips of 40 frames, 1 worker)"
dawn-train bench loader --shards "$OUT/shards" --stage a2v --clip-len 40 --workers 1 --batches 20

step "5/10 stage 1: LFG (latent flow autoencoder)"
dawn-train fit "${DEMO[@]}" -c experiments/demo/lfg.yaml --data.init_args.shards="$OUT/shards" "${QUIET[@]}"

step "6/10 stage 2: PBNet pose and blink"
dawn-train fit "${DEMO[@]}" -c experiments/demo/pbnet.yaml --data.init_args.shards="$OUT/shards" "${QUIET[@]}"
dawn-train fit "${DEMO[@]}" -c experiments/demo/pbnet.yaml -c experiments/demo/pbnet_blink.yaml \
    --data.init_args.shards="$OUT/shards" "${QUIET[@]}"

step "7/10 stage 3: A2V-FDM, curriculum stage 1 (short clips) then stage 2 (random lengths, random reference)"
dawn-train fit "${DEMO[@]}" -c experiments/demo/a2v_stage1.yaml --data.init_args.shards="$OUT/shards" "${QUIET[@]}"
dawn-train fit "${DEMO[@]}" -c experiments/demo/a2v_stage1.yaml -c experiments/demo/a2v_stage2.yaml \
    --data.init_args.shards="$OUT/shards" "${QUIET[@]}"

step "8/10 generate: portrait + speech -> $OUT/generated.mp4 (pose and blinks from PBNet)"
VIDEOS=("$OUT"/raw/*.mp4)  # sorted by the shell's glob
VIDEO=${VIDEOS[-1]}
python - "$VIDEO" "$OUT/portrait.png" <<'PY'
import sys
from PIL import Image
from dawn_train.data.video import decode_all
Image.fromarray(decode_all(open(sys.argv[1], "rb").read())[0]).save(sys.argv[2])
PY
dawn-train generate --config experiments/demo/generate.yaml --image "$OUT/portrait.png" \
    --audio "${VIDEO%.mp4}.wav" --out "$OUT/generated.mp4" --steps 10
# the picture in the README: generated frames at the 4 loudest moments (most open true mouth, >= 10 frames apart),
# the real video at the same frames below
python - "$VIDEO" "$OUT/generated.mp4" "$OUT/frames.png" <<'PY'
import sys
import numpy as np
from PIL import Image
from dawn_train.data.video import decode_all
real, fake = (decode_all(open(path, "rb").read()) for path in sys.argv[1:3])
mouth = np.load(sys.argv[1][:-4] + ".npz")["mouth"][:len(fake)]
picks = []
for i in np.argsort(-mouth):
    picks += [int(i)] if all(abs(int(i) - j) >= 10 for j in picks) else []
picks = sorted(picks[:4])
rows = np.concatenate([np.concatenate([video[i] for i in picks], 1) for video in (fake, real)], 0)
Image.fromarray(rows).resize((rows.shape[1] * 3, rows.shape[0] * 3), Image.BICUBIC).save(sys.argv[3])
print(f"frames {picks} of generated.mp4 (top) and the real video -> {sys.argv[3]}")
PY

step "9/10 metrics on the held-out videos: ground truth read off the generated frames by the synthetic probe"
# FID/FVD/LSE/CSIM need their network weights (README); the probe is trained here (~2 CPU min; 1000 steps are
# more accurate, see README) and scores the generated frames against the ground truth, beside the still frame
dawn-train data probe --out "$OUT/probe.pt" --steps 300 --eval-videos 2
dawn-train eval --ckpt runs/a2v-demo-stage2/checkpoints/last.ckpt --lfg runs/lfg-demo/checkpoints/last.ckpt \
    --shards "$OUT/shards" --max-frames 100 --steps 10 --probe "$OUT/probe.pt" --goals demo

step "10/10 comparison report"
dawn-train report runs/lfg-demo runs/pbnet-pose-demo runs/pbnet-blink-demo runs/a2v-demo-stage1 runs/a2v-demo-stage2 \
    --out "$OUT/report"

cat <<DONE

Demo outputs:
  prepared videos      $OUT/raw
  shards + manifest    $OUT/shards
  training runs        runs/{lfg-demo,pbnet-pose-demo,pbnet-blink-demo,a2v-demo-stage1,a2v-demo-stage2}
                       (checkpoints/, csv/metrics.csv, W&B offline runs in wandb/, samples/ videos)
  generated video      $OUT/generated.mp4 (frames at its loudest moments: $OUT/frames.png)
  metrics              runs/a2v-demo-stage2/eval.json
  report               $OUT/report/report.html (plots + table)
Sync W&B runs later with: wandb sync runs/<name>/wandb/offline-run-*
DONE
