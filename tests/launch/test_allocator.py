"""dawn_train/launch/allocator.py: with freed memory kept, a large buffer freed and allocated again is served from
pages the process already touched (no page faults), where glibc's defaults hand it back and fault it in again."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from dawn_train.launch.allocator import ENV

PROBE = """
import json, resource, sys
import torch
from dawn_train.launch.allocator import keep_freed_memory
applied = keep_freed_memory()
n = 64 * 2**20 // 4  # a 64 MB tensor: above glibc's largest mmap threshold (32 MB)
# touched, then freed, until the steady state: the first rounds march through fresh heap, as the small blocks
# allocated between them keep the freed ones apart until those are freed too
for _ in range(20):
    torch.empty(n).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.empty(n).fill_(2.0)
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""
PAGES = 64 * 2**20 // 4096


def probe(tuning: str) -> dict:
    env = {**os.environ, ENV: tuning}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_freed_memory_is_reused_without_page_faults():
    kept, default = probe("1"), probe("0")
    assert kept["applied"] and not default["applied"]
    assert kept["faults"] < PAGES // 10, kept  # five 64 MB buffers on pages touched before
    assert default["faults"] > kept["faults"], default  # glibc's defaults map and fault each one afresh


def test_opting_out_keeps_glibc_defaults(monkeypatch):
    from dawn_train.launch.allocator import keep_freed_memory

    for value in ("0", "false", "Off"):
        monkeypatch.setenv(ENV, value)
        assert not keep_freed_memory()
