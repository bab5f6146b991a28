"""scripts/gpu_checks.sh, the GPU measurements of one lent-machine call: its commands are valid `dawn-train bench
cases` command lines, and it runs its checks in order within the time budget, skipping what no longer fits."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from dawn_train.bench.cases import ATTN_BACKENDS, CASES, IMPLEMENTATIONS
from dawn_train.cli import build_parser
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_checks.sh"
# a stand-in for dawn-train, which needs a GPU: it takes TAKES seconds and writes its arguments as the JSON the check
# keeps
TAKES = 6
STAND_IN = f"import json, sys, time; time.sleep({TAKES}); print(json.dumps(sys.argv[1:]))"


def plan() -> list[tuple[str, int, list[str]]]:
    out = subprocess.run(["bash", str(SCRIPT), "--plan"], capture_output=True, text=True, check=True).stdout
    checks = []
    for line in out.splitlines():
        name, limit, program, *words = shlex.split(line)
        assert program == "dawn-train"
        checks.append((name, int(limit), words))
    return checks


def test_every_check_is_a_valid_bench_cases_command_on_cuda():
    checks = plan()
    assert [name for name, _, _ in checks][:1] == ["step_sdpa"]  # the step as the experiments train it, first
    for name, limit, words in checks:
        args = build_parser().parse_args(words)
        # each of a check's two runs (one case, two columns) gets a bit under half of its time
        assert args.device == "cuda" and args.release_size and args.json and 0 < 2 * args.run_timeout < limit, name
        assert set(args.cases.split(",")) <= set(CASES) and set(args.impl.split(",")) <= set(IMPLEMENTATIONS), name
        assert args.attn_backend in ATTN_BACKENDS, name
        assert (args.trace_dir is None) == (not args.profile), name


def test_checks_run_in_order_and_those_that_no_longer_fit_are_skipped(tmp_path):
    checks = plan()
    # room for the first check with 5 s to spare: after it (6 s) a check as long as the first no longer fits
    budget, elapsed, ran = checks[0][1] + TAKES - 1, 0, []
    for check in checks:
        if check[1] <= budget - elapsed:
            ran.append(check)
            elapsed += TAKES
    assert ran[0] == checks[0] and any(c[1] == checks[0][1] and c not in ran for c in checks[1:])
    out = tmp_path / "gpu checks & co.v1"
    # PYTHON=echo: env.txt without importing torch, which takes seconds on a loaded machine and would eat the spare
    env = {**os.environ, "DAWN_TRAIN": shlex.join([sys.executable, "-c", STAND_IN]), "PYTHON": "echo"}
    proc = subprocess.run(["bash", str(SCRIPT), str(out), str(budget)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in summary[:-1]] == [name for name, _, _ in checks]
    for (name, limit, _), line in zip(checks, summary):
        if (name, limit, _) in ran:
            assert line.startswith(f"{name} done in")
            argv = json.loads((out / f"{name}.json").read_text())
            assert argv[:2] == ["bench", "cases"] and "--run-timeout" in argv
            if "--trace-dir" in argv:  # into the output folder (a space, a & in its path), a folder per backend
                backend = argv[argv.index("--attn-backend") + 1]
                assert argv[argv.index("--trace-dir") + 1] == str(out / "traces" / backend)
        else:
            assert line.startswith(f"{name} skipped") and f"may take {limit} s" in line
            assert not (out / f"{name}.json").exists()
    assert summary[-1].startswith("total") and "torch.__version__" in (out / "env.txt").read_text()

    # a check that fails is reported and the script says so in its exit status
    env["DAWN_TRAIN"] = shlex.join([sys.executable, "-c", "import sys; sys.exit(3)"])
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "failing"), str(checks[0][1] + 1)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "failed (exit 3" in (tmp_path / "failing" / "summary.txt").read_text()


def test_a_bad_budget_or_no_folder_is_a_usage_error(tmp_path):
    for args in ([], [str(tmp_path / "out"), "ten"]):
        proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.strip(), args
