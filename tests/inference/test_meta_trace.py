"""The disk memo of meta traces (`inference/meta_trace.py`): a trace kept by one process is read by the next, under a
key of the architecture, input shapes and code; a torn, stale or unwritable cache only means tracing again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from torch import nn

from dawn_train.inference import meta_trace
from dawn_train.inference.meta_trace import live_tensor_peak

CHILD = """
import torch
from torch import nn
from dawn_train.inference.meta_trace import live_tensor_peak
print(live_tensor_peak(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64)), "forward", (1000, 64)))
"""


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder with a dot and a space in its path, and an empty in-process memo."""
    folder = tmp_path / "dawn cache.v1"
    monkeypatch.setenv("DAWN_TRAIN_CACHE", str(folder))
    meta_trace._trace.cache_clear()
    yield folder
    meta_trace._trace.cache_clear()


def entries(folder) -> list:
    return sorted((folder / "meta_traces").glob("*/*.json"))


def test_a_trace_is_kept_on_disk_and_read_by_the_next_process(cache):
    peak = live_tensor_peak(model(), "forward", (1000, 64))
    assert peak >= 2 * 1000 * 256 * 4  # a(x) and relu(a(x)) alive together
    [entry] = entries(cache)
    record = json.loads(entry.read_text())
    assert record["peak"] == peak and record["method"] == "forward"
    assert not list((cache / "meta_traces").rglob("*.tmp"))  # written whole, then renamed
    assert entry.parent.name == meta_trace.code_version()[:16] and entry.stat().st_mode & 0o044 == 0o044

    # another process finds the entry under the same key: it answers with what the file says (altered here to
    # tell a read from a trace), not with a trace of its own
    entry.write_text(json.dumps({**record, "peak": peak + 12345}))
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=os.environ.copy())
    assert child.returncode == 0, child.stderr
    assert int(child.stdout.split()[-1]) == peak + 12345

    # another architecture, input shape or code version is another key
    meta_trace._trace.cache_clear()
    assert live_tensor_peak(model(), "forward", (500, 64)) < peak
    wider = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 64))
    assert live_tensor_peak(wider, "forward", (1000, 64)) > peak
    assert len(entries(cache)) == 3


def test_a_code_change_is_a_new_key(cache, monkeypatch):
    peak = live_tensor_peak(model(), "forward", (1000, 64))
    [entry] = entries(cache)
    entry.write_text(json.dumps({"peak": 1}))
    meta_trace._trace.cache_clear()
    monkeypatch.setattr(meta_trace, "code_version", lambda: "an edited model")
    assert live_tensor_peak(model(), "forward", (1000, 64)) == peak and len(entries(cache)) == 2
    meta_trace._trace.cache_clear()
    monkeypatch.setattr(meta_trace, "code_version", lambda: None)  # model source that cannot be read: no entry
    assert live_tensor_peak(model(), "forward", (1000, 64)) == peak and len(entries(cache)) == 2
    # the digest follows the sources of the models and of the tracer, and torch's version
    monkeypatch.undo()
    assert len(meta_trace.code_version()) == 64


class Outside(nn.Module):
    """A module of another library (its class lives outside dawn_train and torch), as HuBERT from transformers:
    what its trace depends on (that library's code and config objects) is not in the key."""

    def __init__(self):
        super().__init__()
        self.layers = model()

    def forward(self, x):
        return self.layers(x)


def test_modules_of_other_libraries_are_traced_in_every_process(cache):
    assert live_tensor_peak(Outside(), "forward", (1000, 64)) == live_tensor_peak(model(), "forward", (1000, 64))
    [entry] = entries(cache)  # the torch-only model's
    assert json.loads(entry.read_text())["inputs"] == [[[1000, 64], "torch.float32"]]


@pytest.mark.parametrize("damage", ["torn", "negative", "not json"])
def test_a_damaged_entry_is_traced_again_and_rewritten(cache, damage):
    peak = live_tensor_peak(model(), "forward", (1000, 64))
    [entry] = entries(cache)
    entry.write_text({"torn": '{"peak": 12', "negative": '{"peak": -5}', "not json": "\x00\x01"}[damage])
    meta_trace._trace.cache_clear()
    assert live_tensor_peak(model(), "forward", (1000, 64)) == peak
    assert json.loads(entry.read_text())["peak"] == peak


def test_no_cache_when_off_and_no_error_when_it_cannot_be_written(tmp_path, monkeypatch):
    meta_trace._trace.cache_clear()
    expected = live_tensor_peak(model(), "forward", (1000, 64))  # the test session runs with the cache off
    for value in ("off", ""):
        monkeypatch.setenv("DAWN_TRAIN_CACHE", value)
        assert meta_trace.cache_dir() is None
    blocked = tmp_path / "a file.txt"
    blocked.write_text("not a folder")
    monkeypatch.setenv("DAWN_TRAIN_CACHE", str(blocked))
    meta_trace._trace.cache_clear()
    assert live_tensor_peak(model(), "forward", (1000, 64)) == expected
    assert blocked.read_text() == "not a folder"
    monkeypatch.delenv("DAWN_TRAIN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert meta_trace.cache_dir() == tmp_path / "xdg" / "dawn_train"
    meta_trace._trace.cache_clear()


def test_old_code_versions_and_stale_temporary_files_are_removed_at_the_first_write(cache, monkeypatch):
    traces = cache / "meta_traces"
    current = traces / meta_trace.code_version()[:16]
    old, recent = traces / "0123456789abcdef", traces / "fedcba9876543210"
    for folder in (old, recent, current):
        folder.mkdir(parents=True)
        (folder / "entry.json").write_text('{"peak": 1}')
    for name in ("stale.tmp", "fresh.tmp"):
        (current / name).write_text("{")
    now = time.time()
    os.utime(old, (now, now - (meta_trace.STALE_VERSION_DAYS + 1) * 86400))
    os.utime(recent, (now, now - (meta_trace.STALE_VERSION_DAYS - 1) * 86400))  # a checkout still in use
    os.utime(current / "stale.tmp", (now, now - meta_trace.STALE_TEMPORARY_S - 60))
    monkeypatch.setattr(meta_trace, "_pruned", set())

    live_tensor_peak(model(), "forward", (1000, 64))
    assert not old.exists() and (recent / "entry.json").is_file()
    assert sorted(p.name for p in current.glob("*.tmp")) == ["fresh.tmp"]  # a write in progress is left alone
    assert len(entries(cache)) == 3  # recent's, current's and the new trace

    # once per process: a folder aged later is left until the next process
    os.utime(recent, (now, now - (meta_trace.STALE_VERSION_DAYS + 1) * 86400))
    meta_trace._trace.cache_clear()
    live_tensor_peak(model(), "forward", (999, 64))
    assert recent.exists()


def test_a_version_read_from_the_cache_is_marked_in_use(cache, monkeypatch):
    live_tensor_peak(model(), "forward", (1000, 64))
    [entry] = entries(cache)
    old = time.time() - (meta_trace.STALE_VERSION_DAYS + 1) * 86400
    os.utime(entry.parent, (old, old))
    monkeypatch.setattr(meta_trace, "_marked_used", set())
    meta_trace._trace.cache_clear()
    live_tensor_peak(model(), "forward", (1000, 64))  # a hit: nothing written, the folder marked used
    assert entry.parent.stat().st_mtime > time.time() - 60
