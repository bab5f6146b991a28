"""`dawn-train eval-lfg`: an LFG's reconstructions of held-out clips from their own motion, beside the still frame."""
import json

import pytest

from dawn_train.cli import main
from dawn_train.inference.evaluate import default_output
from dawn_train.inference.evaluate_lfg import evaluate_lfg
from dawn_train.metrics.synthetic import TABLE


def test_eval_lfg_scores_reconstructions_beside_the_still_frame(models, synth_shards, tmp_path, capsys):
    """With a (briefly trained) probe: the table's rows, one PSNR per video, the LFG goals printed and saved.
    16 frames: lip sync searches +-5 frames and skips clips under 13."""
    from tests.stages.test_a2v import make_tiny_probe

    lfg, _ = models
    probe = make_tiny_probe(tmp_path / "probe.pt")
    out = tmp_path / "eval dir.v2" / "lfg.json"
    assert main(["eval-lfg", "--lfg", str(lfg), "--shards", str(synth_shards), "--max-videos", "2", "--max-frames",
                 "16", "--probe", str(probe), "--goals", "lfg", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = result["synthetic"]
    assert set(rows) == {"generated", "still frame", "ground truth"}  # the reconstruction is the "generated" row
    assert all(rows["generated"][m] is not None for m in TABLE) and rows["still frame"]["PSNR"] is not None
    assert [v["frames"] for v in result["videos"]] == [16, 16]
    # clips of one length: the mean of the per-video PSNRs is the table's PSNR
    assert sum(v["psnr"] for v in result["videos"]) / 2 == pytest.approx(rows["generated"]["PSNR"], abs=1e-3)
    assert [g["metric"] for g in result["goals"]] == ["PSNR", "MouthCorr", "Blink/s", "PoseErr"]
    assert result["goals"][0]["met"] == (rows["generated"]["PSNR"] >= 28)
    assert "LFG reconstruction" in printed and "still frame (baseline)" in printed and "goals (lfg):" in printed
    assert f"{result['videos'][0]['psnr']:.2f} dB" in printed
    # the eye openness behind Blink/s, per video: its blinks on the line of the video, its traces drawn
    from dawn_train.metrics.blink import count_blinks
    eyes = result["videos"][0]["eyes"]
    assert set(eyes) == {"ground truth", "LFG ceiling"} and len(eyes["LFG ceiling"]) == 16
    assert (f"blinks {count_blinks(eyes['LFG ceiling'])} (real frames: {count_blinks(eyes['ground truth'])})"
            in printed)
    assert result["blink_figure"] == str(out.parent / "lfg_blinks.png") and (out.parent / "lfg_blinks.png").is_file()


def test_eval_lfg_without_probe_reports_psnr_and_names_the_rest_unavailable(models, synth_shards, tmp_path):
    lfg, _ = models
    result = evaluate_lfg(str(lfg), str(synth_shards), max_videos=1, max_frames=8, out=str(tmp_path / "e.json"),
                          progress=False)
    generated = result["synthetic"]["generated"]
    assert generated["PSNR"] is not None and generated["MouthCorr"] is None and "MouthCorr" in result["unavailable"]
    assert "eyes" not in result["videos"][0] and "blink_figure" not in result  # nothing read, nothing drawn
    with pytest.raises(ValueError, match="--probe"):
        evaluate_lfg(str(lfg), str(synth_shards), goals="lfg", out=str(tmp_path / "g.json"), progress=False)


def test_eval_lfg_bad_split_is_a_clear_error(models, synth_shards, capsys):
    lfg, _ = models
    assert main(["eval-lfg", "--lfg", str(lfg), "--shards", str(synth_shards), "--split", "test", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no 'test' split" in err and "Traceback" not in err


def test_results_land_in_the_run_of_the_checkpoint(tmp_path):
    assert default_output(tmp_path / "runs" / "lfg" / "checkpoints" / "last.ckpt", "eval_lfg.json") == \
        tmp_path / "runs" / "lfg" / "eval_lfg.json"
    assert default_output(tmp_path / "lfg.pt", "eval_lfg.json") == tmp_path / "lfg.eval_lfg.json"
