"""``thumbdet.files``: the one JSON writer (atomic, byte-stable) and its cache reader."""

import json
import math

from thumbdet.files import read_json, write_json


def test_write_json_bytes_are_indented_json_with_a_newline(tmp_path):
    value = {"b": 1, "a": [1.5, None, "x"], "nested": {"z": True}}
    path = write_json(tmp_path / "out.json", value)
    assert path.read_text() == json.dumps(value, indent=2) + "\n"  # key order kept
    write_json(path, value, sort_keys=True)
    assert path.read_text() == json.dumps(value, indent=2, sort_keys=True) + "\n"


def test_write_json_creates_folders_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    write_json(path, {"first": 1})
    write_json(path, {"second": 2})
    assert read_json(path) == {"second": 2}
    assert [entry.name for entry in path.parent.iterdir()] == ["out.json"]


def test_write_json_keeps_nan_as_before(tmp_path):
    path = write_json(tmp_path / "nan.json", {"AP": float("nan")})
    assert path.read_text() == '{\n  "AP": NaN\n}\n'
    assert math.isnan(read_json(path)["AP"])


def test_read_json_of_a_missing_or_damaged_file_is_none(tmp_path):
    assert read_json(tmp_path / "missing.json") is None
    (tmp_path / "half.json").write_text('{"fingerprint": ')
    assert read_json(tmp_path / "half.json") is None
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert read_json(tmp_path / "binary.json") is None
