"""files.read_json: a missing, misplaced or damaged JSON file is one error naming the file and its role."""
from __future__ import annotations

import pytest

from dawn_train.cli import main
from dawn_train.files import read_json


def test_read_json_names_the_file_and_what_it_should_be(tmp_path):
    folder = tmp_path / "my runs.v1"
    folder.mkdir()
    good = folder / "eval.json"
    good.write_text('{"metrics": {"FID": 1.5}}')
    assert read_json(good, "eval result") == {"metrics": {"FID": 1.5}}
    cases = [(folder / "none.json", FileNotFoundError, r"no such file \(eval result expected\)"),
             (folder, IsADirectoryError, r"a folder \(eval result file expected\)"),
             (folder / "binary.json", ValueError, "not JSON text, a binary file"),
             (folder / "torn.json", ValueError, r"invalid JSON at line 2 column 1, .* \(eval result expected\)")]
    (folder / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    (folder / "torn.json").write_text('{"metrics":\n')
    for path, error, why in cases:
        with pytest.raises(error, match=why) as raised:
            read_json(path, "eval result")
        assert str(path) in str(raised.value)


def test_commands_name_a_damaged_manifest_or_eval_file(tmp_path, capsys):
    shards = tmp_path / "shards dir.v1"
    shards.mkdir()
    (shards / "manifest.json").write_text("{")
    assert main(["data", "inspect", str(shards)]) == 1
    err = capsys.readouterr().err
    assert f"{shards / 'manifest.json'}: invalid JSON at line 1" in err and "(shard manifest expected)" in err
    assert "Traceback" not in err

    damaged = tmp_path / "eval gt.json"
    damaged.write_bytes(b"\xff\xfe\x00binary")
    assert main(["quality-report", "--eval-gt", str(damaged), "--out", str(tmp_path / "out" / "RESULTS.md")]) == 1
    err = capsys.readouterr().err
    assert f"{damaged}: not JSON text" in err and "eval result" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written for a refused input
    assert main(["quality-report", "--eval-gt", str(tmp_path / "missing.json"),
                 "--out", str(tmp_path / "out" / "RESULTS.md")]) == 1
    assert f"{tmp_path / 'missing.json'}: no such file (eval result" in capsys.readouterr().err
