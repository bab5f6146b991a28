"""Sample keys valid for any name, member splitting as webdataset does it, checksums."""
import re

from webdataset.tariterators import base_plus_ext

from dawn_train.data import schema

ODD_NAMES = ["HDTF.v1", "crema-d.1", "tmp.Ab3xQ", "a b", "a_b", "a.b", "ünïcode", "日本語", "x/y", "__meta__",
             ".hidden", "-dash", "v" * 200]
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def test_key_parts_are_safe_distinct_and_keep_safe_names():
    parts = [schema.key_part(name) for name in ODD_NAMES]
    assert all(SAFE.fullmatch(p) for p in parts), parts
    assert len(set(parts)) == len(parts)  # "a b", "a_b" and "a.b" stay three videos
    assert all(len(p) <= schema.KEY_PART_MAX + 9 for p in parts)
    # stable across processes and versions (crc32 of the name, not Python's salted hash): resumed runs and shards
    # written earlier find their videos
    assert schema.key_part("a b") == "a_b-806c5cd3" and schema.key_part("HDTF.v1") == "HDTF_v1-17c57750"
    for name in ("synth", "synth00001", "HDTF_v1", "crema-d"):
        assert schema.key_part(name) == name


def test_members_split_like_webdataset_for_any_names():
    for dataset in ODD_NAMES:
        for video in ODD_NAMES:
            key = schema.sample_key(dataset, video, 3)
            assert key.count("/") == 2 and key.endswith("/0003")
            for member in schema.ALL_KEYS:
                assert schema.split_member(f"{key}.{member}") == (key, member)
                assert base_plus_ext(f"{key}.{member}") == (key, member)


def test_checksum_is_crc32_hex():
    assert schema.checksum(b"") == "00000000"
    assert schema.checksum(b"abc") == "352441c2"
    assert schema.checksum(b"abd") != schema.checksum(b"abc")
