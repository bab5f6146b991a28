"""Keep freed memory in the process instead of handing it back to the kernel (glibc malloc settings).

Why: glibc serves each allocation of 32 MB or more with a fresh `mmap` and gives it back on free, and trims the heap
whenever its free top grows past a few times that; fresh pages fault on their first touch, 4 KiB at a time.  A
release-size A2V-FDM train step allocates and frees tensors of 20-63 MB hundreds of times, so on a 2-core VM its
copies ran at the speed of page faults (a 63 MB gradient copy ~120 ms) and the step varied by 1.5x from one call
to the next.  With `mmap` off and the trim threshold at 2 GiB freed blocks are reused: the same step 2.4-2.7 s ->
1.66-1.77 s, its spread within a process ~10 % instead of ~90 %, the same peak RSS (docs/performance.md, "The
A2V-FDM step at 1.5x").

The cost: freed memory goes back to the kernel only from the top of the heap and only beyond 2 GiB, so a process's
resident size stays near its peak (a model loaded on the CPU and moved to a GPU, say, keeps its host pages).
`DAWN_MALLOC_TUNING=0` (or false/no/off) keeps glibc's defaults.  Other C libraries (no `mallopt`) are left alone.
Applied by the `dawn-train` command (`cli.console_main`), not by `cli.main` called in-process.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "DAWN_MALLOC_TUNING"
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's malloc.h
SETTINGS = (
    (M_MMAP_MAX, 0),  # no per-allocation mmap: large tensors come from the heap and are reused there
    (M_TRIM_THRESHOLD, 2**31 - 1),  # mallopt takes a C int: 2 GiB, its largest value
    (M_TOP_PAD, 256 * 2**20),  # grow the heap 256 MiB at a time: fewer brk calls
)


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` to this process and the workers it forks later (not to workers started by spawn or
    forkserver: those are new interpreters with glibc's defaults).  True when applied; False on
    another OS or C library, with ``DAWN_MALLOC_TUNING=0``, or where one setting was refused."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off") or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in SETTINGS])
