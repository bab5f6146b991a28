"""Goals of `make demo` / `make quality`: each judged against the still-frame baseline or the ground truth."""
from dawn_train.metrics.synthetic.goals import DEMO, PBNET, QUALITY, check_goals, format_goals


def rows(psnr=24.0, still=21.0, mouth=0.8, blink=0.5, truth_blink=0.5, pose_err=1.0, pose_std=2.0, truth_std=2.0):
    return {"generated": {"PSNR": psnr, "MouthCorr": mouth, "Blink/s": blink, "PoseErr": pose_err, "PoseStd": pose_std},
            "still frame": {"PSNR": still, "MouthCorr": 0.0, "Blink/s": 0.0, "PoseErr": 4.0, "PoseStd": 0.0},
            "ground truth": {"PSNR": None, "MouthCorr": 0.99, "Blink/s": truth_blink, "PoseErr": 0.5,
                             "PoseStd": truth_std}}


def verdicts(table, goals):
    return {c.metric: c.met for c in check_goals(table, goals)}


def test_quality_goals_are_relative_to_the_baselines():
    assert verdicts(rows(), QUALITY) == {"PSNR": False, "MouthCorr": True, "Blink/s": True, "PoseErr": True}
    assert verdicts(rows(psnr=25.0), QUALITY)["PSNR"]  # still + 4 dB
    assert not verdicts(rows(blink=0.65), QUALITY)["Blink/s"]  # 30% off the ground truth
    assert not verdicts(rows(pose_err=3.5), QUALITY)["PoseErr"]


def test_demo_goals_and_missing_values():
    assert verdicts(rows(psnr=21.5, mouth=0.5), DEMO) == {"PSNR": True, "MouthCorr": True}
    assert verdicts(rows(psnr=20.0, mouth=0.1), DEMO) == {"PSNR": False, "MouthCorr": False}
    table = rows()
    table["generated"]["MouthCorr"] = None  # no probe: not measurable, never "met"
    checks = check_goals(table, DEMO)
    assert checks[1].met is None and "n/a" in format_goals(checks)[1]


def test_pbnet_motion_goals():
    assert verdicts(rows(pose_std=1.0, blink=0.6), PBNET) == {"Blink/s": True, "PoseStd": True}
    assert verdicts(rows(pose_std=0.5, blink=0.7), PBNET) == {"Blink/s": False, "PoseStd": False}
