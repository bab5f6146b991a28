"""`tracking/eval_log.py`: the evals of one training run (a sweep's parallel evals) each write their own keys into
its summary, in turn, waiting while W&B reports the run in use."""
import json
import threading
import time

import pytest

from dawn_train.tracking import DawnWandbLogger, eval_log, read_offline_run
from dawn_train.tracking.eval_log import log_evaluation, resume_when_free, summary_lock


def test_evals_of_two_windows_both_land_in_the_training_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "train"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"weights")
    logger = DawnWandbLogger(save_dir=str(run), name="train", group="w")
    logger.log_metrics({"val/loss": 1.0}, step=1)
    logger.finalize("success")
    for name, window, fvd in (("p000-window-size=20", 20, 150.0), ("p004-window-size=null", None, 60.0)):
        point = tmp_path / name
        point.mkdir()
        (point / "point.json").write_text(json.dumps({"sweep": "w", "group": "w", "point": name,
                                                      "values": {"window_size": window}}))
        log_evaluation(point, ckpt, {"window_size": window}, ["row", "FVD16"], [["generated", fvd]],
                       {"FVD16": fvd, "BAS": None}, ["video_key", "video"], [["v/0", None]])
    summary = read_offline_run(run)["summary"]
    assert summary["eval/p000-window-size=20/FVD16"] == 150.0 and summary["eval/p004-window-size=null/FVD16"] == 60.0
    assert summary["eval/p004-window-size=null/settings"] == {"window_size": None}
    assert "eval/FVD16" not in summary  # no "latest" key a parallel eval could take over
    assert (run / eval_log.SUMMARY_LOCK).is_file()


def test_a_run_in_use_is_waited_for_and_other_errors_are_not(monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) < 3:
            raise RuntimeError("run train-1234 is in use by another process")
        return "run"

    monkeypatch.setattr(eval_log, "_init", init)
    monkeypatch.setattr(eval_log.time, "sleep", lambda s: None)
    assert resume_when_free(id="train-1234") == "run" and len(calls) == 3
    monkeypatch.setattr(eval_log, "_init", lambda **k: (_ for _ in ()).throw(RuntimeError("network down")))
    with pytest.raises(RuntimeError, match="network down"):
        resume_when_free(id="x")


def test_summary_writes_take_turns(tmp_path):
    entered = threading.Event()

    def second():
        with summary_lock(tmp_path):
            entered.set()

    with summary_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert not entered.is_set()  # waits for the first writer
    thread.join(10)
    assert entered.is_set()


def test_images_are_logged_with_the_eval(tmp_path, monkeypatch):
    """A synthetic eval's eye-openness traces (a PNG beside its json) go into its W&B run as an image."""
    from PIL import Image

    monkeypatch.setenv("WANDB_MODE", "offline")
    ckpt = tmp_path / "a2v.ckpt"
    ckpt.write_bytes(b"weights")
    figure = tmp_path / "eval v1.0_blinks.png"
    Image.new("RGB", (40, 20), "white").save(figure)
    out = tmp_path / "eval"
    out.mkdir()
    log_evaluation(out, ckpt, {"window_size": 80}, ["row", "BAS"], [["generated", 0.2]], {"BAS": 0.2},
                   ["video_key", "video"], [["v/0", None]], images={"eval/blinks": figure})
    offline = read_offline_run(out / "eval_wandb")
    summary = offline["summary"]  # wandb flattens the image's fields into dotted keys
    assert summary["eval/blinks._type"] == "image-file" and (summary["eval/blinks.width"], summary["eval/blinks.height"]) == (40, 20)
    assert any("/media/images/eval/blinks" in path for path in offline["media"])
