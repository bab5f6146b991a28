"""Bad input in a stream: the one handler that warns, counts and fails past a fraction (`SkipCounter`), the check of
each shard's sample count against the manifest (`ShardLengths`), and the error a run stops with (`TooManyBadSamples`).

A truncated tar, an undecodable mp4, a missing key or mismatched lengths goes through `SkipCounter`, which warns
naming the shard and sample key, counts, and raises one clear line naming the shards, the counts and
`max_skip_fraction` once more than that fraction of the samples were bad.
"""
from __future__ import annotations

import re
import warnings


class TooManyBadSamples(ValueError):
    """More bad samples than `max_skip_fraction` allows.  Its message stays the one line it was raised
    with: webdataset appends the stream and URL to the `args` of an error that passes through it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def source_of(exc: Exception) -> str | None:
    """The shard an error of webdataset's tar reader came from: its URL argument or its file object's name."""
    for arg in reversed(exc.args):
        name = getattr(arg, "name", arg)
        if isinstance(name, str) and (name.endswith(".tar") or name.startswith("pipe:")):
            return name
    found = re.search(r"name='([^']+)'", " ".join(str(a) for a in exc.args))
    return found.group(1) if found else None


class SkipCounter:
    """The one handler for bad input: warn (rate-limited), count, fail past a fraction.

    Called directly as webdataset's handler for unreadable tars, and through `bad_sample` for
    samples that were read but are broken.  The fraction is bad / (samples read + tar errors)."""

    def __init__(self, max_skip_fraction: float = 0.1, min_samples: int = 20, warn_first: int = 10):
        self.max_skip_fraction, self.min_samples, self.warn_first = max_skip_fraction, min_samples, warn_first
        self.read = self.tar_errors = self.bad = self.unreported = 0
        self.last_errors: list[str] = []
        self.sources: dict[str, int] = {}  # shard -> bad samples (and tar errors) from it

    @property
    def skipped(self) -> int:
        return self.tar_errors + self.bad

    def __call__(self, exc: Exception) -> bool:
        if isinstance(exc, TooManyBadSamples):  # ours, passing back through webdataset's handler: not another one
            raise exc
        self.tar_errors += 1
        return self._report(exc, source_of(exc))

    def bad_sample(self, exc: Exception, source: str | None = None, count: int = 1) -> bool:
        self.bad += count
        return self._report(exc, source, count)

    def lost_samples(self, exc: Exception, source: str, count: int) -> bool:
        """Samples a shard should have held and did not give: data never read, all bad (the fraction is over them
        too)."""
        self.read += count
        return self.bad_sample(exc, source, count)

    def count_read(self, source):
        """Pipeline stage counting raw samples as they come out of the tars."""
        for sample in source:
            self.read += 1
            yield sample

    def _report(self, exc: Exception, source: str | None, count: int = 1) -> bool:
        self.unreported += count
        message = " ".join(str(a) for a in exc.args if a is not None) or repr(exc)
        self.last_errors = (self.last_errors + [f"{type(exc).__name__}: {message}"])[-5:]
        if source:
            self.sources[source] = self.sources.get(source, 0) + count
        if self.skipped <= self.warn_first or self.skipped % 100 == 0:
            warnings.warn(f"skipped bad sample ({self.skipped} so far): {type(exc).__name__}: {message}", stacklevel=2)
        total = self.read + self.tar_errors
        if total >= self.min_samples and self.skipped > self.max_skip_fraction * total:
            worst = sorted(self.sources.items(), key=lambda item: -item[1])
            shards = ", ".join(f"{url} ({count})" for url, count in worst[:3]) + (" ..." if len(worst) > 3 else "")
            raise TooManyBadSamples(
                f"{self.skipped} of {total} samples read were bad, more than max_skip_fraction={self.max_skip_fraction} "
                f"(the DataModule's; data.init_args.max_skip_fraction of fit, --max-skip-fraction of bench loader); "
                f"bad samples per shard: "
                f"{shards or 'unknown'}; last error: {self.last_errors[-1]}.  Check the shards with `dawn-train data "
                f"inspect DIR`, rewrite or remove the bad ones, or raise max_skip_fraction")
        return True  # continue with the next sample

    def take_unreported(self) -> int:
        count, self.unreported = self.unreported, 0
        return count


class ShardLengths:
    """Pipeline stage comparing the samples each shard gave with the manifest's count: a tar cut at a member
    boundary reads as a shorter, well-formed tar, and its lost samples would go unnoticed.  They count as bad."""

    def __init__(self, expected: dict[str, int], counter: SkipCounter):
        self.expected, self.counter = expected, counter

    def __call__(self, source):
        url, keys = None, set()
        for sample in source:
            # a new read of a shard: another URL, or a key again (the same shard read twice in a row)
            if sample.get("__url__") != url or sample.get("__key__") in keys:
                self.check(url, len(keys))
                url, keys = sample.get("__url__"), set()
            keys.add(sample.get("__key__"))
            yield sample
        self.check(url, len(keys))  # not reached when the stream is closed in the middle of a shard

    def check(self, url: str | None, read: int) -> None:
        missing = self.expected.get(url, read) - read if url is not None else 0
        if missing > 0:
            error = ValueError(f"{url}: {read} samples, the manifest lists {self.expected[url]} (truncated?)")
            self.counter.lost_samples(error, url, missing)
