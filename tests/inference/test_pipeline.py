"""The inference pipeline's own logic (no trained weights needed)."""
import torch

from dawn_train.inference.pipeline import A2VInfo, Pipeline
from dawn_train.inference.pose_blink import PoseBlink
from dawn_train.models.a2v.conditioning import condition
from tests.models.a2v.test_conditioning import inputs


def test_pipeline_conditions_as_the_checkpoint_recorded():
    audio, pose, blink, _, _ = inputs()
    motion = PoseBlink(pose[0].numpy(), blink[0].numpy(), pose[0, 0].numpy(), blink[0, 0].numpy())
    settings = {"pose_scale": [2.0] * 6, "audio_norm": [-8.6, 3.8], "blink_scale": 4.0, "motion_shift": 3.0}
    pipe = Pipeline(torch.nn.Identity(), torch.nn.Identity(), A2VInfo(condition=settings))
    want = condition(audio, pose, blink, pose[:, 0], blink[:, 0], **settings)
    assert torch.allclose(pipe.condition(audio[0].numpy(), motion), want)
    official = Pipeline(torch.nn.Identity(), torch.nn.Identity(), A2VInfo())  # no record: raw features
    assert torch.allclose(official.condition(audio[0].numpy(), motion), condition(audio, pose, blink, pose[:, 0], blink[:, 0]))
