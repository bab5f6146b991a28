"""`dawn-train data prep`: a list of raw videos -> a prepared-video directory, resumable and sliceable.

Inputs: every video file under `--src` (recursively: .mp4 .mov .mkv .avi .webm .flv .m4v), or the paths
listed in `--list` (one per line, relative paths from the current directory, `#` comments).  The video id
is the file name without its suffix; two inputs with one id are an error before any work.

    --slice i/n    this process takes inputs i, i+n, i+2n ... of the sorted list (a SLURM array task
                   i of n, `slurm/prep.sbatch`): the n slices cover every input exactly once
    rerun          a video whose `<id>.json` exists, or that failures.jsonl lists, is skipped; a crashed
                   slice is rerun alone and redoes only its unfinished videos
    failures       one line per video in `<out>/failures.jsonl` (`prep/failures.py`); the run goes on
    stops          mediapipe missing (checked once, before any work), disk full, out of memory, a bug: the
                   run stops with one line (`PrepStopped`) and lists nothing; a rerun continues
Each slice shows a progress bar and returns (and the CLI prints) done / skipped / failed counts.
"""
from __future__ import annotations

from pathlib import Path

from dawn_train.data.prep.failures import FAILURES, PrepFailure, PrepStopped, read_failures, record_failure
from dawn_train.data.prep.landmarks import PrepExtraMissing, load_face_mesh_module
from dawn_train.data.prep.video import PrepOptions, prepare_video
from dawn_train.data.prepared import is_prepared
from dawn_train.log import get_logger

log = get_logger(__name__)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".flv", ".m4v")


def list_inputs(src: str | Path | None = None, list_file: str | Path | None = None) -> list[Path]:
    """The raw videos under `src` or listed in `list_file` (exactly one of them), sorted, ids unique."""
    if (src is None) == (list_file is None):
        raise ValueError("give the raw videos as --src DIR or --list FILE (one of them)")
    if src is not None:
        root = Path(src)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such directory of raw videos")
        paths = [p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
    else:
        listing = Path(list_file)
        if not listing.is_file():
            raise FileNotFoundError(f"{listing}: no such list of raw videos")
        lines = (line.strip() for line in listing.read_text().splitlines())
        paths = [Path(line) for line in lines if line and not line.startswith("#")]
    paths = sorted(paths)
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise ValueError(f"two inputs have the video id '{path.stem}': {seen[path.stem]} and {path}")
        seen[path.stem] = path
    if not paths:
        raise FileNotFoundError(f"{src or list_file}: no raw videos ({', '.join(VIDEO_SUFFIXES)})")
    return paths


def parse_slice(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--slice {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ValueError(f"--slice {text!r}: need 0 <= i < n")
    return index, count


def slice_of(paths: list[Path], index: int, count: int) -> list[Path]:
    """Slice `index` of `count`: every count-th input from `index` (disjoint, together all of them)."""
    return paths[index::count]


def _stopped(where: str, exc: BaseException) -> PrepStopped:
    return PrepStopped(f"prep stopped at {where}: {type(exc).__name__}: {exc} (a problem of the machine or the code, "
                       f"not of this video, so it is not listed in {FAILURES}; finished videos are kept: fix it and rerun)")


def _prepare_one(job: tuple[Path, Path, PrepOptions]) -> tuple[str, str, str | None]:
    """(video id, source, None or the failure reason); runs in a worker process.  Only a PrepFailure is a fault of
    the video; anything else (disk full, out of memory, a bug) raises PrepStopped, which ends the run."""
    source, out, options = job
    try:
        prepare_video(source, out, source.stem, options)
        return source.stem, str(source), None
    except PrepFailure as exc:
        return source.stem, str(source), str(exc)
    except Exception as exc:
        raise _stopped(str(source), exc) from exc


def check_prep_extra() -> None:
    """Raise PrepStopped (one line with the install command) when mediapipe's face mesh cannot be imported."""
    try:
        load_face_mesh_module()
    except PrepExtraMissing as exc:
        raise PrepStopped(f"data prep needs the prep extra: {exc}") from exc


def prep_videos(inputs: list[Path], out: str | Path, options: PrepOptions = PrepOptions(), slice_index: int = 0,
                slice_count: int = 1, workers: int = 1, progress: bool = True) -> dict:
    """Prepare this slice's videos into `out`; returns {total, done, skipped, failed, slice, failures}.
    Raises PrepStopped (nothing listed) when the run cannot go on (module docstring)."""
    from multiprocessing import get_context

    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mine = slice_of(sorted(inputs), slice_index, slice_count)
    failed_before = read_failures(out)
    todo = [path for path in mine if not is_prepared(out, path.stem) and path.stem not in failed_before]
    if todo:
        check_prep_extra()
    summary = {"total": len(mine), "done": 0, "skipped": len(mine) - len(todo), "failed": 0,
               "slice": f"{slice_index}/{slice_count}", "failures": []}
    jobs = [(path, out, options) for path in todo]
    bar = tqdm(total=len(mine), initial=summary["skipped"], desc=f"prep slice {slice_index}/{slice_count}",
               unit="video", disable=not progress)
    pool = get_context("spawn").Pool(workers) if workers > 1 and len(jobs) > 1 else None
    finished = False
    try:
        for video_id, source, reason in (pool.imap_unordered(_prepare_one, jobs) if pool else map(_prepare_one, jobs)):
            if reason is None:
                summary["done"] += 1
            else:
                summary["failed"] += 1
                summary["failures"].append(record_failure(out, video_id, source, reason))
                log.warning("failed %s: %s (listed in %s)", video_id, reason, out / FAILURES)
            bar.update()
        finished = True
    except PrepStopped:
        raise
    except Exception as exc:  # in this process: e.g. failures.jsonl on a full disk
        raise _stopped(str(out), exc) from exc
    finally:
        if pool is not None:
            if finished:
                pool.close()
            else:  # the other workers' videos would be thrown away too: stop them now
                pool.terminate()
            pool.join()
        bar.close()
    return summary
