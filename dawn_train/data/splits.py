"""Which prepared video goes to which split of `dawn-train data shards`.

Without split files, a seeded share of the videos (`val_fraction`) goes to `val` and the rest to `train`.
With split files (the official lists in `datasets/`), listed videos or speakers go to `test`, excluded ones to
no split at all, and `val` is drawn from the rest as before.  A split file says what it lists by its name:

    test_ids.txt           video ids of the test split     (datasets/hdtf/test_ids.txt: the official 41)
    excluded_ids.txt       video ids left out everywhere   (datasets/hdtf/excluded_ids.txt: official "bad" videos)
    test_speakers.txt      speakers of the test split      (datasets/crema/test_speakers.txt)
    excluded_speakers.txt  speakers left out everywhere

One line per entry; blank lines and lines starting with `#` are skipped.  With a speaker list every split is
speaker-disjoint: `val` is drawn by speaker too.  The speaker of a video is the first `_`-separated field of
its id (CREMA-D names a clip `1001_DFA_ANG_XX`: actor 1001); the official CREMA list uses the Diffused-Heads
folder names, where `s64` is actor 1064 (its `crema_audio/audio/s1/` holds `1001_*.wav`), so `s<N>` entries
mean actor 1000 + N.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dawn_train.log import get_logger

log = get_logger(__name__)
# file stem -> (split the entries go to, what an entry names)
SPLIT_FILE_ROLES = {"test_ids": ("test", "video"), "excluded_ids": ("excluded", "video"),
                    "test_speakers": ("test", "speaker"), "excluded_speakers": ("excluded", "speaker")}
DIFFUSED_HEADS_SPEAKER = re.compile(r"s(\d+)")


def split_videos(ids: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Deterministic split by video: a seeded permutation, the first round(f * N) go to val."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = max(n_val, 1)
    val = {ids[i] for i in order[:n_val]}
    return {"train": [i for i in ids if i not in val], "val": [i for i in ids if i in val]}


def speaker_of(video_id: str) -> str:
    """The speaker of a video: the first `_`-separated field of its id (CREMA-D `1001_DFA_ANG_XX` -> `1001`)."""
    return video_id.split("_", 1)[0]


def speaker_entry(entry: str) -> str:
    """A speaker-list entry as `speaker_of` spells it: Diffused-Heads `s64` -> CREMA-D actor `1064`."""
    match = DIFFUSED_HEADS_SPEAKER.fullmatch(entry)
    return str(1000 + int(match.group(1))) if match else entry


@dataclass(frozen=True)
class SplitLists:
    """The entries of the split files given, by role (video ids, and speakers as `speaker_of` spells them)."""

    test_videos: frozenset = frozenset()
    excluded_videos: frozenset = frozenset()
    test_speakers: frozenset = frozenset()
    excluded_speakers: frozenset = frozenset()
    files: dict = field(default_factory=dict)  # file name -> sha1 of its bytes

    @classmethod
    def read(cls, paths: Sequence[str | Path]) -> "SplitLists":
        entries: dict[tuple[str, str], set] = {role: set() for role in SPLIT_FILE_ROLES.values()}
        files = {}
        for path in map(Path, paths):
            role = SPLIT_FILE_ROLES.get(path.stem)
            if role is None:
                raise ValueError(f"{path}: a split file is named after what it lists: "
                                 f"{', '.join(stem + '.txt' for stem in SPLIT_FILE_ROLES)}")
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such split file")
            data = path.read_bytes()
            lines = [line.strip() for line in data.decode("utf-8").splitlines()]
            names = {line for line in lines if line and not line.startswith("#")}
            entries[role] |= {speaker_entry(n) for n in names} if role[1] == "speaker" else names
            files[path.name] = hashlib.sha1(data).hexdigest()
        return cls(*(frozenset(entries[role]) for role in SPLIT_FILE_ROLES.values()), files=files)

    @property
    def by_speaker(self) -> bool:
        return bool(self.test_speakers or self.excluded_speakers)

    def describe(self) -> dict:
        """What the build fingerprint holds: the files' names and hashes (not their paths, so that the same lists
        given from elsewhere are the same build)."""
        return {"files": dict(sorted(self.files.items())), "unit": "speaker" if self.by_speaker else "video"}

    def role_of(self, video_id: str) -> Optional[str]:
        """"excluded", "test" or None (train/val) for a video; an excluded entry wins over a test entry."""
        speaker = speaker_of(video_id)
        if video_id in self.excluded_videos or speaker in self.excluded_speakers:
            return "excluded"
        if video_id in self.test_videos or speaker in self.test_speakers:
            return "test"
        return None


def assign_splits(ids: list[str], val_fraction: float, seed: int,
                  lists: Optional[SplitLists] = None) -> tuple[dict[str, list[str]], dict]:
    """(split -> video ids, record for the manifest).  Splits: train and val, plus test when `lists` are given;
    the record names the split files, the unit (video or speaker), the excluded videos and the list entries that
    match no video (warned about: a misspelt id would otherwise silently land in training)."""
    if lists is None:
        return split_videos(ids, val_fraction, seed), {"files": {}, "unit": "video", "excluded": [], "not_found": []}
    roles = {video_id: lists.role_of(video_id) for video_id in ids}
    rest = [v for v in ids if roles[v] is None]
    if lists.by_speaker:
        by_speaker = split_videos(sorted({speaker_of(v) for v in rest}), val_fraction, seed)
        val_speakers = set(by_speaker["val"])
        splits = {"train": [v for v in rest if speaker_of(v) not in val_speakers],
                  "val": [v for v in rest if speaker_of(v) in val_speakers]}
    else:
        splits = split_videos(rest, val_fraction, seed)
    splits["test"] = [v for v in ids if roles[v] == "test"]
    speakers = {speaker_of(v) for v in ids}
    not_found = sorted((lists.test_videos | lists.excluded_videos) - set(ids))
    not_found += sorted((lists.test_speakers | lists.excluded_speakers) - speakers)
    if not_found:
        log.warning("%d split-file entries match no prepared video (e.g. %s)", len(not_found), ", ".join(not_found[:5]))
    record = {**lists.describe(), "excluded": [v for v in ids if roles[v] == "excluded"], "not_found": not_found}
    return splits, record
