"""Ground-truth metrics for the synthetic domain (`dawn_train.data.synth`): a probe that reads the
renderer's parameters (mouth, eyes, head pose, identity) back from frames, and metrics computed
from generated frames against the truth, each beside its still-frame baseline.

    dawn-train data probe --out runs/synth_probe.pt      # train_probe(...), a few CPU minutes
    suite = SyntheticSuite("runs/synth_probe.pt")
    suite.update(generated, real, source, driving_pose, mouth)
    suite.compute()  # {"generated": {...}, "still frame": {...}, "ground truth": {...}}
"""
from dawn_train.metrics.synthetic.metrics import (
    FrameFidelity,
    HeadMotion,
    IdentityError,
    MouthSync,
    PoseError,
    pearson,
    shifted_correlations,
)
from dawn_train.metrics.synthetic.probe import ProbeConfig, ProbeReading, SynthProbe
from dawn_train.metrics.synthetic.render import (
    IDENTITY_NAMES,
    Scene,
    mouth_from_landmarks,
    render,
    sample_scenes,
    scene_from_labels,
)
from dawn_train.metrics.synthetic.suite import ROWS, TABLE, SyntheticSuite
from dawn_train.metrics.synthetic.train import (
    PROBE_WEIGHTS,
    Augment,
    evaluate_probe,
    load_probe,
    save_probe,
    train_probe,
    video_identity,
)

__all__ = ["Augment", "FrameFidelity", "HeadMotion", "IDENTITY_NAMES", "IdentityError", "MouthSync", "PROBE_WEIGHTS", "PoseError",
           "ProbeConfig", "ProbeReading", "ROWS", "Scene", "SynthProbe", "SyntheticSuite", "TABLE",
           "evaluate_probe", "load_probe", "mouth_from_landmarks", "pearson", "render", "sample_scenes", "save_probe",
           "scene_from_labels", "shifted_correlations", "train_probe", "video_identity"]
