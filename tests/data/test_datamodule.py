"""DataModule set-up checks: what cannot make a batch is refused before training, naming the manifest."""
import pytest

from dawn_train.data.datamodule import A2VDataModule, LFGDataModule, PBNetDataModule
from dawn_train.data.shards import write_shards
from dawn_train.data.synth import synth_dataset
from tests.data.conftest import copy_videos


def test_frames_of_several_sizes_are_refused_at_setup(synth_raw, tmp_path):
    raw = tmp_path / "mixed sizes.v1" / "raw"
    copy_videos(synth_raw, raw)  # 64 px
    synth_dataset(tmp_path / "big", videos=1, seconds=1.0, size=128, seed=9, workers=1, progress=False)
    copy_videos(tmp_path / "big", raw, {"synth00000": "big00000"})
    shards = raw.parent / "shards"
    manifest = write_shards(raw, shards, val_fraction=0.25, samples_per_shard=2, progress=False)
    assert manifest["frame_size"] == [64, 128]
    for module in (LFGDataModule(str(shards)), A2VDataModule(str(shards))):
        with pytest.raises(ValueError, match=r"shards/manifest.json: the shards hold frames of several sizes "
                                             r"\(\[64, 128\] px\)"):
            module.setup("fit")
    PBNetDataModule(str(shards)).setup("fit")  # no frames: any size will do
