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


def _two_epochs(shards, method):
    """Two training epochs and one validation of 2 workers each, started by `method`."""
    data = LFGDataModule(str(shards), batch_size=2, num_workers=2, worker_start_method=method, val_clips=4)
    epochs = []
    for loader in (data.train_dataloader(), data.train_dataloader(), data.val_dataloader()):
        assert loader.multiprocessing_context.get_start_method() == method  # the workers really start that way
        epochs.append(list(loader))
    return epochs, data.train_epoch.value


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_started_by_spawn_or_forkserver_read_what_forked_workers_read(synth_shards, method):
    # macOS starts workers with spawn and Linux with forkserver from Python 3.14 on: the pipeline travels pickled,
    # and the shared epoch counter still reaches the workers (the second epoch draws other pairs)
    import torch

    forked, forked_epoch = _two_epochs(synth_shards, "fork")
    started, started_epoch = _two_epochs(synth_shards, method)
    assert started_epoch == forked_epoch == 1
    assert [len(epoch) for epoch in started] == [len(epoch) for epoch in forked] and min(map(len, forked)) > 1
    for ours, ref in zip(sum(started, []), sum(forked, [])):
        assert ours.keys() == ref.keys()
        for key, value in ref.items():
            assert torch.equal(ours[key], value) if torch.is_tensor(value) else ours[key] == value, key
    assert not torch.equal(forked[0][0]["driving"], forked[1][0]["driving"])


def test_an_unknown_worker_start_method_is_refused_by_name(synth_shards):
    with pytest.raises(ValueError, match=r"data.init_args.worker_start_method: 'threads' is not a start method"):
        LFGDataModule(str(synth_shards), worker_start_method="threads")
    loader = LFGDataModule(str(synth_shards), num_workers=0, worker_start_method="spawn").train_dataloader()
    assert loader.multiprocessing_context is None  # no workers: nothing to start
