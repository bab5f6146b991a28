#!/usr/bin/env bash
# `make quality`: the proof that the three stages train into a talking head, on the synthetic dataset whose
# every frame has a known truth.  Renders data, trains the probe, LFG, PBNet (pose, blink) and A2V-FDM (both
# curriculum stages), then evaluates on held-out identities and writes experiments/synth/RESULTS.md (table,
# goals, learning curves as PNG).  About 40 minutes on 2 quiet CPU cores (up to 90 on a loaded machine).  Every
# step is a plain `dawn-train` command; the runs land in quality_out/runs/ (experiments/synth/base.yaml).
# QUALITY_OUT moves quality_out/, QUALITY_RESULTS the folder of RESULTS.md, and QUALITY_PROBE=FILE reuses a probe
# made by `dawn-train data probe --steps 1000` instead of training one (~7 min; the probe does not depend on the data),
# QUALITY_LFG=FILE one more LFG config given after synth/lfg.yaml (an ablation, e.g. experiments/synth/lfg_no_eyes.yaml).
set -euo pipefail
OUT=${QUALITY_OUT:-quality_out}
RESULTS=${QUALITY_RESULTS:-experiments/synth}
export WANDB_MODE=${WANDB_MODE:-offline}
step() { printf '\n\033[1m== %s (%s)\033[0m\n' "$*" "$(date +%T)"; }
for given in QUALITY_PROBE QUALITY_LFG; do  # checked before $OUT is emptied, not after minutes of work
    if [ -n "${!given:-}" ] && [ ! -f "${!given}" ]; then
        echo "make quality: $given=${!given}: no such file" >&2; exit 2
    fi
done
rm -rf "$OUT"  # a fresh recipe run: never mixed with an earlier one's runs
mkdir -p "$OUT"
START=$(date +%s)
QUIET=(--trainer.enable_model_summary=false)
# Where the configs say quality_out/ (runs, shards, probe), the runs of this recipe use $OUT: given after every config.
HERE=(--run.root "$OUT/runs" --data.init_args.shards "$OUT/shards")
PROBED=("${HERE[@]}" --model.init_args.probe "$OUT/probe.pt")
DEMO=(-c experiments/base.yaml -c experiments/demo/base.yaml)
SYNTH=(-c experiments/synth/base.yaml)
RUNS="$OUT/runs"

step "1/8 synthetic talking heads: 32 videos, 4 of them held-out identities"
dawn-train data synth --out "$OUT/raw" --videos 32 --seconds 4 --size 64 --seed 1
dawn-train data shards --src "$OUT/raw" --out "$OUT/shards" --val-fraction 0.125 --samples-per-shard 4

step "2/8 the probe that reads mouth, eyes, pose and identity off frames"
if [ -n "${QUALITY_PROBE:-}" ]; then  # a probe file made by the same command earlier (it does not depend on the data)
    cp "$QUALITY_PROBE" "$OUT/probe.pt"
else
    dawn-train data probe --out "$OUT/probe.pt" --steps 1000
fi

step "3/8 LFG"
LFG=(-c experiments/synth/lfg.yaml ${QUALITY_LFG:+-c "$QUALITY_LFG"})
dawn-train fit "${DEMO[@]}" -c experiments/demo/lfg.yaml "${SYNTH[@]}" "${LFG[@]}" "${QUIET[@]}" "${PROBED[@]}"

step "4/8 PBNet pose and blink"
PBNET=(-c experiments/demo/pbnet.yaml "${SYNTH[@]}" -c experiments/synth/pbnet.yaml)
dawn-train fit "${DEMO[@]}" "${PBNET[@]}" "${QUIET[@]}" "${HERE[@]}"
dawn-train fit "${DEMO[@]}" "${PBNET[@]}" -c experiments/demo/pbnet_blink.yaml "${QUIET[@]}" "${HERE[@]}"

step "5/8 A2V-FDM curriculum stage 1"
A2V=(-c experiments/demo/a2v_stage1.yaml "${SYNTH[@]}" -c experiments/synth/a2v_stage1.yaml)
dawn-train fit "${DEMO[@]}" "${A2V[@]}" "${QUIET[@]}" "${PROBED[@]}"

step "6/8 A2V-FDM curriculum stage 2"
dawn-train fit "${DEMO[@]}" -c experiments/demo/a2v_stage1.yaml -c experiments/demo/a2v_stage2.yaml "${SYNTH[@]}" \
    -c experiments/synth/a2v_stage1.yaml -c experiments/synth/a2v_stage2.yaml "${QUIET[@]}" "${PROBED[@]}"

step "7/8 eval on held-out identities: ground-truth pose/blink, then PBNet's"
A2V_CKPT="$RUNS/a2v-synth-stage2/checkpoints/last.ckpt"
EVAL=(--ckpt "$A2V_CKPT" --lfg "$RUNS/lfg-synth/checkpoints/last.ckpt" --shards "$OUT/shards" --max-frames 100
      --steps 10 --probe "$OUT/probe.pt" --no-wandb --quiet)
dawn-train eval "${EVAL[@]}" --goals quality --out "$OUT/eval_gt.json"
dawn-train eval "${EVAL[@]}" --goals pbnet --out "$OUT/eval_pbnet.json" \
    --pbnet-pose "$RUNS/pbnet-pose-synth/checkpoints/last.ckpt" --pbnet-blink "$RUNS/pbnet-blink-synth/checkpoints/last.ckpt"

step "8/8 results -> $RESULTS/RESULTS.md"
dawn-train report "$RUNS"/lfg-synth "$RUNS"/pbnet-pose-synth "$RUNS"/pbnet-blink-synth "$RUNS"/a2v-synth-stage1 \
    "$RUNS"/a2v-synth-stage2 --out "$OUT/report"
dawn-train quality-report --eval-gt "$OUT/eval_gt.json" --eval-pbnet "$OUT/eval_pbnet.json" --curves "$OUT/report" \
    --minutes $(( ($(date +%s) - START) / 60 )) --probe "$OUT/probe.pt" --out "$RESULTS" \
    --command "${QUALITY_PROBE:+QUALITY_PROBE=<a probe made earlier> }${QUALITY_LFG:+QUALITY_LFG=$QUALITY_LFG }${QUALITY_RESULTS:+QUALITY_RESULTS=$QUALITY_RESULTS }make quality"
