"""The launch tests' `run_dawn`: a run past its deadline fails the test with every process's Python stack, and
`retry_restoring` runs it once more from its run folder as it was before, warning with the stacks."""
from __future__ import annotations

import pytest

from . import conftest
from .conftest import run_dawn

LONG = ["data", "synth", "--videos", "400", "--size", "64", "--seconds", "4", "--workers", "1"]


def test_a_run_past_its_deadline_fails_with_its_stacks(tmp_path):
    with pytest.raises(pytest.fail.Exception) as failed:
        run_dawn([*LONG, "--out", str(tmp_path / "raw")], timeout=10)
    message = str(failed.value)
    assert "did not finish within 10 s" in message
    assert "most recent call first" in message and "synth_dataset" in message


def test_the_retry_starts_from_the_run_folder_as_it_was(tmp_path, monkeypatch):
    run = tmp_path / "run dir.v1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_text("step 4")
    seen = []

    def hang_then_finish(args, timeout, cwd):
        seen.append((run / "checkpoints" / "last.ckpt").read_text())
        if len(seen) == 1:  # the hung run saved a later checkpoint before it was killed
            (run / "checkpoints" / "last.ckpt").write_text("step 6, half written")
            return None, "", "Current thread 0x1 (most recent call first): waiting"
        return 0, "done", ""

    monkeypatch.setattr(conftest, "_run_with_deadline", hang_then_finish)
    with pytest.warns(UserWarning, match="(?s)was run again from the run folder.*most recent call first"):
        proc = conftest.run_dawn(["fit"], timeout=1, retry_restoring=run)
    assert proc.stdout == "done" and seen == ["step 4", "step 4"]  # the retry saw the folder as it was
