"""`dawn-train bench loader` on shards with a truncated tar: skipped and counted as in training, or, past
`--max-skip-fraction`, one line naming the shard (never a worker's traceback)."""
from __future__ import annotations

import json
import shutil

import pytest

from dawn_train.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_truncated_shard_is_skipped_and_counted_or_named_in_one_line(synth_shards, tmp_path, capsys):
    shards = tmp_path / "some shards.v1"
    shutil.copytree(synth_shards, shards)
    truncated = shards / "train-000003.tar"
    truncated.write_bytes(truncated.read_bytes()[:3000])
    bench = ["bench", "loader", "--shards", str(shards), "--stage", "lfg", "--workers", "0", "--batch-size", "2",
             "--batches", "4", "--json"]

    assert main([*bench, "--max-skip-fraction", "0.9"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["skipped"] > 0 and result["clips"] == 8

    assert main(bench) == 1  # one bad shard of six is more than the default fraction, 0.1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("dawn-train: error:")]
    assert f"{truncated} (" in line and "max_skip_fraction=0.1" in line and "Traceback" not in err
