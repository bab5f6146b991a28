#!/usr/bin/env bash
# The GPU measurements that the performance work still lacks (docs/performance.md, "Not measured yet"), as one
# call within one time budget: a lent GPU machine is held for minutes, so the checks run in order of what they
# tell, each bounded (`bench cases --run-timeout`), and one that no longer fits the time left is skipped and listed.
#
#   scripts/gpu_checks.sh OUT_DIR [SECONDS]     # default 540 s: inside a 10-minute call, with start-up left over
#   scripts/gpu_checks.sh --plan                # print the checks' commands and their limits, run nothing
#
# OUT_DIR gets env.txt (GPU, driver, torch), one <check>.json (bench cases --json) and <check>.log per check,
# traces/sdpa and traces/math (Chrome traces of the profiled steps) and summary.txt (each check: done, failed or skipped, seconds).
# DAWN_TRAIN, PYTHON: the dawn-train and python command lines (default: dawn-train, python).
set -uo pipefail

# name | seconds the whole check may take | arguments of `dawn-train bench cases` (after --device cuda --release-size
# --json).  In order of what they tell: the step as the experiments train it (sdpa; its profile names the attention
# kernel), sampling eagerly and replayed as CUDA graphs (the 2x goal), then the math step beside it.
CHECKS=(
  "step_sdpa|170|--cases a2v_step_t20 --impl fast --bf16 --batch 16 --flops --attn-backend sdpa --repeats 5 --warmup 2 --profile 25 --trace-dir @TRACES@/sdpa"
  "sample_eager|100|--cases sample_t200 --impl reference,fast --steps 20 --repeats 3 --warmup 1 --attn-backend sdpa"
  "sample_graphs|360|--cases sample_t200 --impl fast --compile --compile-mode reduce-overhead --steps 20 --repeats 3 --warmup 1 --attn-backend sdpa"
  "step_math|170|--cases a2v_step_t20 --impl fast --bf16 --batch 16 --flops --attn-backend math --repeats 5 --warmup 2 --profile 25 --trace-dir @TRACES@/math"
)

# each of a check's two runs (one case, two columns) gets a bit under half of its time, so --run-timeout can fire
run_timeout() { echo $(( ($1 - 10) / 2 )); }

if [ "${1:-}" = "--plan" ]; then
    for check in "${CHECKS[@]}"; do
        IFS='|' read -r name limit args <<< "$check"
        echo "$name $limit dawn-train bench cases --device cuda --release-size --json --run-timeout $(run_timeout "$limit")" \
             "${args//@TRACES@/traces}"
    done
    exit 0
fi
if [ $# -lt 1 ]; then
    echo "usage: scripts/gpu_checks.sh OUT_DIR [SECONDS] | --plan" >&2
    exit 2
fi
out=$1
budget=${2:-540}
if ! [[ "$budget" =~ ^[0-9]+$ ]]; then
    echo "scripts/gpu_checks.sh: SECONDS must be a whole number of seconds, got '$budget'" >&2
    exit 2
fi
if ! eval "DAWN_CMD=(${DAWN_TRAIN:-dawn-train})" || ! eval "PYTHON_CMD=(${PYTHON:-python})"; then
    echo "cannot parse DAWN_TRAIN or PYTHON as command lines" >&2
    exit 2
fi
mkdir -p "$out/traces" || exit 1
start=$SECONDS
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    "${PYTHON_CMD[@]}" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
torch.backends.cudnn.version(), "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)' 2>&1
} > "$out/env.txt"
: > "$out/summary.txt"
failed=0
for check in "${CHECKS[@]}"; do
    IFS='|' read -r name limit args <<< "$check"
    left=$(( budget - (SECONDS - start) ))
    if [ "$left" -lt "$limit" ]; then
        echo "$name skipped: ${left} s left, it may take ${limit} s" | tee -a "$out/summary.txt"
        continue
    fi
    read -r -a words <<< "$args"
    words=("${words[@]/#@TRACES@/"$out"/traces}")  # after the split (the path may hold spaces); quoted: a & stays a &
    began=$SECONDS
    # the whole command is bounded, and each run under it: a hung run is killed and reported by `bench cases` beside
    # the finished one instead of losing the check's JSON
    timeout --signal=INT --kill-after=10 "$limit" "${DAWN_CMD[@]}" bench cases --device cuda \
        --release-size --json --run-timeout "$(run_timeout "$limit")" "${words[@]}" > "$out/$name.json" 2> "$out/$name.log"
    rc=$?
    state="done"
    [ "$rc" -ne 0 ] && state="failed (exit $rc, see $name.log)" && failed=1
    echo "$name $state in $(( SECONDS - began )) s" | tee -a "$out/summary.txt"
done
echo "total $(( SECONDS - start )) s of $budget" | tee -a "$out/summary.txt"
exit "$failed"
