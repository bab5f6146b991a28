"""Round trip synth -> shards -> loader, rank/worker splitting, and bad-input handling."""
import io
import multiprocessing
import re
import shutil
import tarfile
import warnings

import numpy as np
import pytest
import torch

from dawn_train.data.audio import log_mel, read_wav
from dawn_train.data.clips import A2VClip, collate, lfg_pair, pbnet_window
from dawn_train.data.datamodule import A2VDataModule, PBNetDataModule
from dawn_train.data.schema import STAGE_KEYS
from dawn_train.data.shards import shard_urls
from dawn_train.data.skips import TooManyBadSamples
from dawn_train.data.stream import EpochDataLoader, make_pipeline
from dawn_train.data.video import decode_all
from tests.data.conftest import corrupt_member


def video_id(key: str) -> str:
    return key.rsplit(":", 1)[1].split("/")[1]


def test_a2v_clip_equals_ground_truth_frame_by_frame(synth_raw, synth_shards):
    dm = A2VDataModule(str(synth_shards), clip_len=12, clip_len_max=16, reference="random", batch_size=2,
                       num_workers=0, clips_per_epoch=8)
    lengths = set()
    for batch in dm.train_dataloader():
        lengths.add(batch["frames"].shape[1])
        for i, key in enumerate(batch["key"]):
            vid, start, ref = video_id(key), int(batch["start"][i]), int(batch["ref_index"][i])
            n = batch["frames"].shape[1]
            labels = np.load(synth_raw / f"{vid}.npz")
            frames = decode_all((synth_raw / f"{vid}.mp4").read_bytes())
            feature = log_mel(read_wav(synth_raw / f"{vid}.wav"), len(frames)).astype(np.float16).astype(np.float32)
            clip = slice(start, start + n)
            assert np.array_equal(batch["frames"][i].numpy(), np.moveaxis(frames[clip], -1, 1))
            assert np.array_equal(batch["ref_frame"][i].numpy(), np.moveaxis(frames[ref], -1, 0))
            assert np.array_equal(batch["audio_feat"][i].numpy(), feature[clip])
            for field in ("pose", "blink", "face_box", "mouth_lmk"):
                assert np.array_equal(batch[field][i].numpy(), labels[field][clip]), field
            assert np.array_equal(batch["ref_pose"][i].numpy(), labels["pose"][ref])
            wav = read_wav(synth_raw / f"{vid}.wav")[start * 640:(start + n) * 640]
            assert np.allclose(batch["audio"][i].numpy(), wav, atol=1e-4)
    assert lengths <= set(range(12, 17)) and len(lengths) > 1  # L varies per batch, never within one


def test_stage_one_reference_is_the_first_clip_frame(synth_shards):
    dm = A2VDataModule(str(synth_shards), clip_len=10, batch_size=2, num_workers=0, clips_per_epoch=4)
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(batch["ref_index"], batch["start"])
    assert torch.equal(batch["ref_frame"], batch["frames"][:, 0])


def test_pbnet_windows_of_short_chunks_and_padding(synth_shards):
    dm = PBNetDataModule(str(synth_shards), window=80, batch_size=2, num_workers=0, clips_per_epoch=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pose"].shape == (2, 50, 6) and batch["audio_feat"].shape == (2, 50, 80)
    assert (batch["length"] == 50).all()  # 2 s chunks are shorter than the 80-frame window
    short = {"pose": np.ones((3, 6), np.float32), "length": 3}
    long = {"pose": np.ones((5, 6), np.float32), "length": 5}
    padded = collate([short, long])
    assert padded["pose"].shape == (2, 5, 6) and (padded["pose"][0, 3:] == 0).all()
    assert padded["length"].tolist() == [3, 5]


@pytest.mark.parametrize("workers", [0, 2])
def test_validation_asked_for_more_clips_than_samples_reads_other_clips_each_pass(synth_shards, workers):
    """2 validation videos, 12 clips asked: every pass over them draws other clips (the same ones at every
    validation), not one pass's clips repeated."""
    dm = A2VDataModule(str(synth_shards), clip_len=4, batch_size=2, num_workers=workers, val_clips=12)
    def clips():
        return sorted((key, int(start)) for batch in dm.val_dataloader() for key, start in zip(batch["key"], batch["start"]))
    first = clips()
    # one reader: 6 passes over both videos; two readers (one video each): 6 passes each, in batches across passes
    assert len(first) == 12 and len({video_id(key) for key, _ in first}) == 2
    assert len(set(first)) >= len(first) - 2  # 47 positions per video: a repeat by chance, not a repeated pass
    assert clips() == first  # validation is the same clips every epoch


def validation_of_rank(urls, rank, world, workers, val_clips, batch_size=2):
    pipeline = make_pipeline(urls, pbnet_window, STAGE_KEYS["pbnet"], batch_size, train=False, batches_per_worker=1,
                             workers=workers, rank=rank, world_size=world, seed=1, lengths=(10, 10), val_clips=val_clips)
    loader = EpochDataLoader(pipeline, multiprocessing.Value("i", 0), advance=False, num_workers=workers)
    batches = list(loader)
    assert len(batches) == len(loader), "the length Lightning plans validation with is not what the loader yields"
    return [(key, int(start)) for batch in batches for key, start in zip(batch["key"], batch["start"])]


@pytest.mark.parametrize("world,workers,val_clips", [(2, 2, 12), (2, 2, 5), (3, 2, 1), (1, 4, 3)])
def test_validation_clips_are_dealt_over_every_rank_and_worker(synth_shards, world, workers, val_clips):
    """2 validation videos, more readers than videos (each reader reads both and keeps its share of the samples):
    the clips asked come out, rounded up to the same number for every rank (a rank without a validation batch
    never joins the others' metric reduction, one with an extra batch waits under ZeRO-3), and both videos are
    used evenly."""
    urls = shard_urls(synth_shards, "val")
    per_rank = [validation_of_rank(urls, rank, world, workers, val_clips) for rank in range(world)]
    counts = [len(clips) for clips in per_rank]
    assert counts == [-(-val_clips // world)] * world, counts  # equal: under ZeRO-3 a rank's extra batch hangs
    videos = [video_id(key) for clips in per_rank for key, _ in clips]
    assert abs(videos.count(videos[0]) - (len(videos) - videos.count(videos[0]))) <= 1
    every = [clip for clips in per_rank for clip in clips]
    assert len(set(every)) >= len(every) - 1  # other windows each pass, not one pass's windows again


def test_validation_readers_see_every_sample_across_passes(synth_raw, tmp_path):
    """1 validation shard of 2 videos in 20-frame chunks (head, middle, 10-frame tail, twice), 12-frame clips, 3
    ranks: dealt in the same order every pass, rank 2 would only ever get the tails and have no batch.  The deal
    turns each pass: every rank gets its clips, and a reader left with nothing raises instead of hanging the
    others."""
    from dawn_train.data.shards import write_shards

    shards = tmp_path / "chunked"
    write_shards(synth_raw, shards, val_fraction=0.25, samples_per_shard=6, chunk_frames=20, progress=False)
    urls = shard_urls(shards, "val")
    assert len(urls) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for clip_len, clips in ((12, 6), (12, 9)):
            per_rank = []
            for rank in range(3):
                pipeline = make_pipeline(urls, A2VClip("first"), STAGE_KEYS["a2v"], 2, train=False, batches_per_worker=1,
                                         workers=0, rank=rank, world_size=3, lengths=(clip_len, clip_len),
                                         val_clips=clips, where="chunked/manifest.json")
                per_rank.append(list(EpochDataLoader(pipeline, multiprocessing.Value("i", 0), advance=False)))
            assert [sum(len(b["key"]) for b in batches) for batches in per_rank] == [clips // 3] * 3
        pipeline = make_pipeline(urls, A2VClip("first"), STAGE_KEYS["a2v"], 2, train=False, batches_per_worker=1,
                                 workers=0, rank=1, world_size=3, lengths=(25, 25), val_clips=6,
                                 where="chunked/manifest.json")
        with pytest.raises(TooManyBadSamples, match=r"chunked/manifest.json: reader 1/0 \(rank/worker\) got no clip "
                                                    r"for its 2 asked: .* [1-9]\d* shorter than the clip"):
            list(EpochDataLoader(pipeline, multiprocessing.Value("i", 0), advance=False))


def run_rank(urls, rank, world, workers, batches_per_worker=3):
    epoch = multiprocessing.Value("i", -1)
    pipeline = make_pipeline(urls, lfg_pair, STAGE_KEYS["lfg"], 1, train=True, batches_per_worker=batches_per_worker,
                             workers=workers, rank=rank, world_size=world, seed=1, epoch=epoch, shuffle_buffer=1)
    loader = EpochDataLoader(pipeline, epoch, advance=True, num_workers=workers)
    shards_of_worker = [set() for _ in range(workers)]
    batches = list(loader)
    for i, batch in enumerate(batches):  # DataLoader returns batches of workers in turn
        shards_of_worker[i % workers].update(k.rsplit(":", 1)[0] for k in batch["key"])
    return batches, shards_of_worker


def test_two_ranks_two_workers_disjoint_shards_equal_batches(synth_shards):
    urls = shard_urls(synth_shards, "train")  # 6 shards, 4 readers
    results = [run_rank(urls, rank, world=2, workers=2, batches_per_worker=1) for rank in range(2)]
    assert len(results[0][0]) == len(results[1][0]) == 2
    slots = [s for _, shards in results for s in shards]
    for i in range(len(slots)):
        for j in range(i + 1, len(slots)):
            assert not slots[i] & slots[j], "two readers got the same shard in one epoch"
    # with more batches than shards per slot, the stream goes on (resampled) and counts stay equal
    long = [run_rank(urls, rank, world=2, workers=2, batches_per_worker=5)[0] for rank in range(2)]
    assert len(long[0]) == len(long[1]) == 10


def test_too_few_shards_for_readers_is_a_clear_error(synth_shards):
    urls = shard_urls(synth_shards, "train")[:2]
    with pytest.raises(ValueError, match="2 shards for 4 readers"):
        make_pipeline(urls, lfg_pair, STAGE_KEYS["lfg"], 1, train=True, batches_per_worker=1, workers=2, world_size=2)


@pytest.fixture()
def broken_shards(synth_shards, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(synth_shards, root)
    path = root / "train-000001.tar"  # the sample in this shard loses its pose.npy
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if not m.name.endswith("pose.npy")]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    truncated = root / "train-000002.tar"  # cut inside the mp4 of its only sample
    truncated.write_bytes(truncated.read_bytes()[:3000])
    return root


def test_bad_samples_are_skipped_counted_and_named(broken_shards):
    urls = shard_urls(broken_shards, "train")
    pipeline = make_pipeline(urls, A2VClip("first"), STAGE_KEYS["a2v"], 1, train=True, batches_per_worker=12,
                             workers=0, lengths=(8, 8), max_skip_fraction=0.9, shuffle_buffer=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(EpochDataLoader(pipeline, multiprocessing.Value("i", 0), advance=False, num_workers=0))
    assert len(batches) == 12
    skipped = sum(int(b["skipped"]) for b in batches)
    messages = [str(w.message) for w in caught if "skipped bad sample" in str(w.message)]
    assert skipped >= 2 and len(messages) == min(skipped, 10)  # warnings are rate-limited
    assert any("train-000001.tar" in m and "synth" in m and "pose.npy" in m for m in messages)
    assert any("train-000002.tar" in m for m in messages)
    keys = {k for b in batches for k in b["key"]}
    assert not any("train-000001.tar" in k or "train-000002.tar" in k for k in keys)


def test_past_the_skip_fraction_the_run_stops_with_a_clear_error(broken_shards):
    urls = shard_urls(broken_shards, "train")
    pipeline = make_pipeline(urls, pbnet_window, ("pose.npy", "json"), 1, train=True, batches_per_worker=200,
                             workers=0, lengths=(10, 10), max_skip_fraction=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TooManyBadSamples, match="max_skip_fraction=0.05") as raised:
            list(EpochDataLoader(pipeline, multiprocessing.Value("i", 0), advance=False, num_workers=0))
    # one line, raised once (not again by webdataset's handler it passes through): counts, the setting, the shards
    message = str(raised.value)
    assert "\n" not in message and not isinstance(raised.value.__context__, TooManyBadSamples)
    assert re.match(r"\d+ of \d+ samples read were bad", message) and "data.init_args.max_skip_fraction" in message
    assert "broken/train-000002.tar (" in message  # the truncated shard, with its count


def test_epochs_reshuffle_but_are_reproducible(synth_shards):
    def keys_of_two_epochs():
        dm = A2VDataModule(str(synth_shards), clip_len=8, batch_size=1, num_workers=0, clips_per_epoch=6, seed=4)
        loader = dm.train_dataloader()
        return [[b["key"][0] + str(int(b["start"][0])) for b in loader] for _ in range(2)]

    first, second = keys_of_two_epochs(), keys_of_two_epochs()
    assert first == second
    assert first[0] != first[1]


def test_corrupted_member_is_skipped_counted_and_named(synth_shards, tmp_path):
    """4 KB of random bytes inside an intact tar: the stream skips that sample through the skip
    handler (its checksum no longer matches), naming shard, key and member; stages that do not
    read the member are not affected."""
    root = tmp_path / "corrupted"
    shutil.copytree(synth_shards, root)
    key = corrupt_member(root / "train-000003.tar", "audio.wav")
    urls = shard_urls(root, "train")

    def read(keys, draw, lengths):
        pipeline = make_pipeline(urls, draw, keys, 1, train=False, batches_per_worker=10, workers=0, lengths=lengths,
                                 max_skip_fraction=0.5)  # two passes over the 6 shards
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = list(EpochDataLoader(pipeline, multiprocessing.Value("i", 0), advance=False, num_workers=0))
        messages = [str(w.message) for w in caught if "skipped bad sample" in str(w.message)]
        return {k for b in batches for k in b["key"]}, sum(int(b["skipped"]) for b in batches), messages

    keys, skipped, messages = read(STAGE_KEYS["a2v"], A2VClip("first"), (8, 8))
    assert skipped in (1, 2) and len(keys) == 5 and not any("train-000003.tar" in k for k in keys)
    assert len(messages) == skipped
    assert all(part in messages[0] for part in ("train-000003.tar", key, "audio.wav is corrupted"))
    keys, skipped, _ = read(STAGE_KEYS["pbnet"], pbnet_window, (10, 10))
    assert skipped == 0 and len(keys) == 6


def test_chunks_shorter_than_the_clip_are_skipped_not_counted_as_bad(synth_raw, tmp_path):
    """2-s videos in 20-frame chunks: every video ends in a 10-frame tail, too short for a 12-frame clip.  Those
    are sound samples: skipped without counting towards max_skip_fraction (a third of the samples here, which
    stopped the run as bad input).  Clips longer than every chunk stop with a clear error, not an endless wait."""
    from dawn_train.data.shards import write_shards

    shards = tmp_path / "chunked shards.v1"
    write_shards(synth_raw, shards, val_fraction=0.25, samples_per_shard=3, chunk_frames=20, progress=False)
    dm = A2VDataModule(str(shards), clip_len=12, batch_size=2, num_workers=0, clips_per_epoch=24)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(dm.train_dataloader())
    assert len(batches) == 12 and all(int(b["skipped"]) == 0 for b in batches)
    notes = [str(w.message) for w in caught if "shorter than the clip" in str(w.message)]
    assert len(notes) == 1 and "not counted as bad" in notes[0] and "10 frames" in notes[0]
    assert not any("skipped bad sample" in str(w.message) for w in caught)

    too_long = A2VDataModule(str(shards), clip_len=25, batch_size=2, num_workers=0, clips_per_epoch=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TooManyBadSamples, match=r"manifest.json: 20 samples in a row are shorter than the clip"):
            list(too_long.train_dataloader())


def test_a_shard_cut_at_a_member_boundary_is_noticed(synth_raw, tmp_path):
    """A tar cut just before a sample's first header is a well-formed, shorter tar: without the manifest's counts
    its lost samples vanish silently.  The stream counts them as bad, naming the shard; inspect reports it."""
    from dawn_train.data.shards import inspect_shards, write_shards

    shards = tmp_path / "cut shards.v1"
    write_shards(synth_raw, shards, val_fraction=0.25, samples_per_shard=3, progress=False)
    path = shards / "train-000000.tar"
    with tarfile.open(path) as tar:
        keys = [(m.name.split(".", 1)[0], m.offset) for m in tar]
    second = next(offset for key, offset in keys if key != keys[0][0])
    path.write_bytes(path.read_bytes()[:second])  # 1 of 3 samples left
    with tarfile.open(path) as tar:
        assert len({m.name.split(".", 1)[0] for m in tar}) == 1  # a sound tar

    dm = A2VDataModule(str(shards), clip_len=8, batch_size=1, num_workers=0, clips_per_epoch=12, max_skip_fraction=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skipped = sum(int(batch["skipped"]) for batch in dm.train_dataloader())
    assert skipped >= 2 and skipped % 2 == 0  # 2 lost samples each time the shard is read
    notes = [str(w.message) for w in caught if "the manifest lists" in str(w.message)]
    assert notes and all("train-000000.tar: 1 samples, the manifest lists 3 (truncated?)" in note for note in notes)
    assert any("train-000000.tar: 1 samples, the manifest lists 3" in bad
               for bad in inspect_shards(shards, progress=False)["bad"])
