"""harness.io: atomic files and folders leave either the old or the new content, never a half-written one."""

from __future__ import annotations

import pytest

from harness.io import TRAIN_RECORD, atomic_dir, atomic_path, copy_dir_atomic, read_json, save_model_atomic, versions, write_json


class _Saves:
    def __init__(self, name: str, fail: bool = False):
        self.name, self.fail = name, fail

    def save_pretrained(self, folder) -> None:
        (folder / f"{self.name}.bin").write_text(self.name)
        if self.fail:
            raise RuntimeError("killed mid-save")


def test_write_json_round_trip_and_no_temp_left(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_json(path, {"x": 1, "p": tmp_path})
    assert read_json(path) == {"x": 1, "p": str(tmp_path)}
    write_json(path, [1, 2], indent=None)
    assert path.read_text() == "[1, 2]"
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"old": True})
    with pytest.raises(ValueError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"new": ')
            raise ValueError("killed mid-write")
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "m") as tmp:
            (tmp / "half").write_text("x")
            raise ValueError("kill")
    assert read_json(path) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no folder, no temporary


def test_save_model_atomic_replaces_or_keeps(tmp_path):
    out = tmp_path / "model"
    save_model_atomic(_Saves("m1"), _Saves("tok"), out, {"k": 1})
    assert sorted(p.name for p in out.iterdir()) == sorted([TRAIN_RECORD, "m1.bin", "tok.bin"])
    assert read_json(out / TRAIN_RECORD) == {"k": 1}
    with pytest.raises(RuntimeError):
        save_model_atomic(_Saves("m2", fail=True), _Saves("tok"), out)
    assert (out / "m1.bin").exists() and not (out / "m2.bin").exists()  # a killed save leaves the old model
    save_model_atomic(_Saves("m3"), _Saves("tok"), out, overwrite=False)  # shared cache: first writer wins
    assert (out / "m1.bin").exists() and not (out / "m3.bin").exists()
    save_model_atomic(_Saves("m4"), _Saves("tok"), out)
    assert sorted(p.name for p in out.iterdir()) == ["m4.bin", "tok.bin"]
    copy_dir_atomic(out, tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["m4.bin", "tok.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "model"]


def test_versions_names_python_and_torch():
    v = versions()
    assert v["python"].count(".") == 2 and "torch" in v
