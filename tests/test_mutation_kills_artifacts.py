"""The content-addressed store (harness.training.artifacts) on hand-built folders: where an entry lives, which files it
links and which it copies, what `lookup` accepts and discards, and that the first writer wins. Fast; in
`make mutation`'s test selection (issue 29 item 8)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.training import artifacts
from harness.training.artifacts import ENTRY_RECORD, entry_path, lookup, materialise, publish, read_entry, store_root


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_store_root_follows_bench_store_else_the_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_STORE", str(tmp_path / "s"))
    assert store_root("dpo") == tmp_path / "s" / "dpo"
    assert entry_path("dpo", "k9") == tmp_path / "s" / "dpo" / "k9"
    monkeypatch.delenv("BENCH_STORE")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "c"))
    assert store_root("kto") == tmp_path / "c" / "trained" / "kto"
    monkeypatch.setenv("BENCH_STORE", "")  # empty: not set
    assert store_root("kto") == tmp_path / "c" / "trained" / "kto"


def test_weights_are_hard_linked_and_small_files_copied(tmp_path) -> None:
    weights = {"a.safetensors": b"1" * 7, "b.bin": b"2" * 5, "c.pt": b"3" * 3, "tok.model": b"4" * 2}
    src = _folder(tmp_path / "src", {**weights, "config.json": b"{}", ENTRY_RECORD: b"{\"key\": 1}"})
    (src / "sub").mkdir()  # folders are not part of an entry
    assert materialise(src, tmp_path / "dst") == "hardlink+copy"
    dst = tmp_path / "dst"
    assert sorted(os.listdir(dst)) == sorted([*weights, "config.json"])
    for name in weights:
        assert os.path.samefile(src / name, dst / name), name
    assert not os.path.samefile(src / "config.json", dst / "config.json")
    assert (dst / "config.json").read_bytes() == b"{}"
    only_weights = _folder(tmp_path / "w", {"a.safetensors": b"1"})
    assert materialise(only_weights, tmp_path / "dw") == "hardlink"
    only_small = _folder(tmp_path / "j", {"x.json": b"[]", "y.txt": b"t"})
    assert materialise(only_small, tmp_path / "dj") == "copy"
    assert (tmp_path / "dj" / "y.txt").read_bytes() == b"t"


def test_a_failed_link_falls_back_to_a_copy(tmp_path, monkeypatch) -> None:
    src = _folder(tmp_path / "src", {"a.safetensors": b"weights"})

    def no_links(a, b):
        raise OSError("cross-device link")

    monkeypatch.setattr(artifacts.os, "link", no_links)
    assert materialise(src, tmp_path / "dst") == "copy"
    assert (tmp_path / "dst" / "a.safetensors").read_bytes() == b"weights"
    assert not os.path.samefile(src / "a.safetensors", tmp_path / "dst" / "a.safetensors")


def test_materialise_replaces_what_was_there(tmp_path) -> None:
    src = _folder(tmp_path / "src", {"a.safetensors": b"new"})
    dst = _folder(tmp_path / "dst", {"old.json": b"stale", "a.safetensors": b"old"})
    materialise(src, dst)
    assert os.listdir(dst) == ["a.safetensors"] and (dst / "a.safetensors").read_bytes() == b"new"


def test_publish_records_key_kind_manifest_and_record(tmp_path) -> None:
    src = _folder(tmp_path / "src", {"m.safetensors": b"w" * 11, "config.json": b"{}!"})
    (src / "sub").mkdir()
    path = publish("dpo", "key1", src, {"run_name": "r", "beta": 0.1})
    assert path == entry_path("dpo", "key1")
    entry = read_entry(path)
    assert entry == {"key": "key1", "kind": "dpo", "files": {"config.json": 3, "m.safetensors": 11},
                     "run_name": "r", "beta": 0.1}
    assert json.loads((path / ENTRY_RECORD).read_text()) == entry
    assert lookup("dpo", "key1") == path
    assert lookup("kto", "key1") is None and lookup("dpo", "key2") is None


def test_the_first_writer_wins(tmp_path) -> None:
    first = publish("dpo", "k", _folder(tmp_path / "a", {"m.bin": b"a"}), {"run_name": "first"})
    again = publish("dpo", "k", _folder(tmp_path / "b", {"m.bin": b"bb", "extra.json": b"{}"}), {"run_name": "second"})
    assert again == first
    assert read_entry(first)["run_name"] == "first" and sorted(os.listdir(first)) == [ENTRY_RECORD, "m.bin"]
    assert (first / "m.bin").read_bytes() == b"a"


@pytest.mark.parametrize("damage", ["truncated", "extra file", "missing file", "other key", "bad json", "no record"])
def test_lookup_discards_an_entry_that_fails_its_check(tmp_path, damage) -> None:
    path = publish("dpo", "k", _folder(tmp_path / "src", {"m.safetensors": b"w" * 10, "c.json": b"{}"}), {})
    if damage == "truncated":
        (path / "c.json").write_bytes(b"{")
    elif damage == "extra file":
        (path / "stray.txt").write_bytes(b"")
    elif damage == "missing file":
        (path / "c.json").unlink()
    elif damage == "other key":
        entry = read_entry(path)
        (path / ENTRY_RECORD).write_text(json.dumps({**entry, "key": "k2"}))
    elif damage == "bad json":
        (path / ENTRY_RECORD).write_text("{not json")
    else:
        (path / ENTRY_RECORD).unlink()
    assert lookup("dpo", "k") is None
    assert os.listdir(path.parent) == []  # removed, trash included
    # a fresh publish under the same key is accepted again
    fresh = publish("dpo", "k", _folder(tmp_path / "src2", {"m.safetensors": b"v"}), {})
    assert lookup("dpo", "k") == fresh and read_entry(fresh)["files"] == {"m.safetensors": 1}


def test_a_subfolder_or_a_file_in_the_entry_is_ignored_but_a_file_at_the_entry_path_is_no_entry(tmp_path) -> None:
    path = publish("dpo", "k", _folder(tmp_path / "src", {"m.bin": b"1"}), {})
    (path / "sub").mkdir()  # a folder is not in the manifest, so the entry still checks
    assert lookup("dpo", "k") == path
    not_dir = entry_path("dpo", "plain")
    not_dir.write_text("x")
    assert lookup("dpo", "plain") is None and not_dir.read_text() == "x"  # not a folder: left alone


def test_discard_of_a_missing_entry_is_a_no_op(tmp_path) -> None:
    artifacts._discard(tmp_path / "nothing")
    assert os.listdir(tmp_path) == []
    entry = _folder(tmp_path / "e", {"f": b"1"})
    artifacts._discard(entry)
    assert os.listdir(tmp_path) == []


def test_a_cleanup_that_fails_never_fails_the_lookup(tmp_path, monkeypatch) -> None:
    """The renamed trash of a corrupt entry is removed best-effort: a removal error (a busy file on a network disk) is
    swallowed, the caller retrains."""
    path = publish("dpo", "k", _folder(tmp_path / "src", {"m.bin": b"12"}), {})
    (path / "m.bin").write_bytes(b"1")
    removed = []

    def rmtree(p, ignore_errors=False, **kw):
        if not ignore_errors:
            raise OSError("device or resource busy")
        removed.append(Path(p).name)

    monkeypatch.setattr(artifacts.shutil, "rmtree", rmtree)
    assert lookup("dpo", "k") is None and removed and removed[0].startswith(".k.trash")


def test_a_racing_second_publisher_keeps_the_first_entry(tmp_path, monkeypatch) -> None:
    """Two runs both missed the store and trained: the one that publishes second must not replace the entry the
    first published (a reader may be linking its files)."""
    first = publish("dpo", "k", _folder(tmp_path / "a", {"m.bin": b"a"}), {"run_name": "first"})
    monkeypatch.setattr(artifacts, "lookup", lambda kind, key: None)  # its lookup ran before the first finished
    assert publish("dpo", "k", _folder(tmp_path / "b", {"m.bin": b"bb"}), {"run_name": "second"}) == first
    assert read_entry(first)["run_name"] == "first" and (first / "m.bin").read_bytes() == b"a"
    assert sorted(os.listdir(first.parent)) == ["k"]  # the loser's temp folder is gone
