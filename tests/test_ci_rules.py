"""CI never goes green by skipping: missing reference fixtures, a SLURM cluster that does not start
and SLURM tests without root skip locally but fail under `CI=true`."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, missing_reference, require_module, skip_unless_ci

SKIP, FAIL = pytest.skip.Exception, pytest.fail.Exception


@pytest.mark.parametrize("ci, outcome", [(None, SKIP), ("", SKIP), ("false", SKIP), ("true", FAIL), ("TRUE", FAIL),
                                         ("1", FAIL)])
def test_missing_reference_skips_locally_fails_in_ci(monkeypatch, tmp_path, ci, outcome):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("DAWN_SHARED", str(tmp_path))
    with pytest.raises(outcome) as raised:
        missing_reference(tmp_path / "reference" / "parity")
    message = str(raised.value)
    assert str(tmp_path / "reference" / "parity") in message and "set DAWN_SHARED" in message


def test_reference_fixtures_fail_in_ci_when_missing(tmp_path):
    """The real `parity_dir` and `official_shapes` fixtures (tests/conftest.py loaded as a plugin) in a
    pytest subprocess with DAWN_SHARED pointing nowhere: skipped without CI, errors with CI=true."""
    test = tmp_path / "test_needs_reference.py"
    test.write_text("def test_parity(parity_dir):\n    pass\n\n\ndef test_shapes(official_shapes):\n    pass\n")

    def run(ci: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env.update(DAWN_SHARED=str(tmp_path / "nowhere"), OMP_NUM_THREADS="1", **({"CI": ci} if ci else {}))
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                               "--rootdir", str(tmp_path), str(test)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)

    local, ci = run(None), run("true")
    assert local.returncode == 0 and "2 skipped" in local.stdout, local.stdout[-2000:]
    assert ci.returncode == 1 and "2 errors" in ci.stdout and "set DAWN_SHARED" in ci.stdout, ci.stdout[-2000:]


def test_skip_unless_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(SKIP, match="no cluster"):
        skip_unless_ci("no cluster")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(FAIL, match="no cluster .*must not skip in CI"):
        skip_unless_ci("no cluster")


def test_slurm_tests_without_root_fail_in_ci(monkeypatch):
    """tests/launch/test_slurm.py's cluster set-up, as a user who is not root and sees no cluster."""
    from tests.launch import test_slurm

    monkeypatch.setattr(test_slurm.shutil, "which", lambda name: None)
    monkeypatch.setattr(test_slurm.os, "geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(SKIP, match="not root"):
        test_slurm.start_cluster()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(FAIL, match="not root"):
        test_slurm.start_cluster()


def test_slow_target_fails_in_ci_when_the_cluster_does_not_start():
    """The `make test-slow` line that starts the cluster, with the start script replaced by `false`
    (failed start) or `true`, run by sh as make runs it."""
    lines = (REPO / "Makefile").read_text().splitlines()
    recipe = lines[lines.index("test-slow: install") + 1:]
    start = next(line.strip() for line in recipe if "scripts/slurm_cluster.sh" in line).replace("$$", "$")

    def run(script: str, ci: str | None) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", **({"CI": ci} if ci is not None else {})}
        return subprocess.run(["sh", "-c", start.replace("scripts/slurm_cluster.sh", script)], env=env,
                              capture_output=True, text=True, timeout=30)

    assert run("false", None).returncode == 0 and "skip unless run as root" in run("false", None).stderr
    assert run("false", "false").returncode == 0
    failed = run("false", "true")
    assert failed.returncode != 0 and "slurm tests must run in CI" in failed.stderr
    assert run("true", "true").returncode == 0


def test_missing_module_skips_locally_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert require_module("json").dumps([]) == "[]"
    with pytest.raises(SKIP, match="no_such_module_x is not installed .*dawn-train\\[prep\\]"):
        require_module("no_such_module_x")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(FAIL, match="no_such_module_x is not installed .*must not skip in CI"):
        require_module("no_such_module_x")


def test_optional_modules_are_required_not_skipped():
    """Optional dependencies are required through `require_module` (fails under CI), never importorskip."""
    call = "importorskip" + "("
    offenders = [str(path.relative_to(REPO)) for path in sorted((REPO / "tests").rglob("*.py"))
                 if call in path.read_text()]
    assert not offenders, f"use tests.conftest.require_module instead of pytest.importorskip in {offenders}"


@pytest.mark.parametrize("files, expected", [
    ({}, "all"),  # no cgroup files: the affinity mask
    ({"cpu.max": "max 100000\n"}, "all"),  # v2, no quota
    ({"cpu.max": "150000 100000\n"}, 2),  # v2, 1.5 CPUs of quota: 2 kept busy
    ({"cpu.max": "100000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "all"),  # v1, no quota
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1, half a CPU
    ({"cpu.max": "6400000 100000\n"}, "all"),  # a quota above the CPUs there are
])
def test_cpus_script_counts_a_containers_quota(tmp_path, files, expected):
    """scripts/cpus.sh (`make test`'s worker count and the workers' threads): the affinity mask, fewer under a
    cgroup CPU quota."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    env = {"PATH": "/usr/bin:/bin", "CGROUP_ROOT": str(tmp_path)}
    out = subprocess.run(["bash", str(REPO / "scripts" / "cpus.sh")], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    everything = len(os.sched_getaffinity(0))
    assert int(out.stdout) == (everything if expected == "all" else min(expected, everything))
