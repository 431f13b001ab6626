"""The method-dataset loaders (harness/datasets/common.py, pku_saferlhf.py, hh_rlhf.py, truthfulqa.py, hub.py) on
hand-built rows: every field of every pair they return, which rows they drop, dedupe or refuse, the counts they fill,
the prompt-hash folds recomputed here with hashlib (buckets exactly at a fold bound included), every error's type and
the file, row and field it names, and the hub path with `datasets` / `huggingface_hub` replaced by fakes (loopback
sockets only, never the network). Fast; in `make mutation`'s test selection (issue 29 item 8). The real-data checks
are in tests/test_datasets.py, tests/test_prompt_checks.py and tests/test_hub_offline.py."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import random
import socket
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.datasets import common, hh_rlhf, hub, pku_saferlhf, truthfulqa
from harness.errors import BenchError, DataError
from harness.types import EvalPrompt, PreferencePair as PP

# ---------------------------------------------------------------- hand computations


def _bucket(text: str) -> int:
    """The fold hash, computed here: sha1 of the lower-cased, space-collapsed prompt, mod 100."""
    return int(hashlib.sha1(" ".join(text.split()).lower().encode()).hexdigest(), 16) % 100


def _find(stem: str, lo: int, hi: int, skip: int = 0, wrap=lambda t: t) -> str:
    """The (skip+1)-th text "stem N?" whose prompt `wrap(text)` has its bucket in [lo, hi)."""
    for i in range(100000):
        text = f"{stem} {i}?"
        if lo <= _bucket(wrap(text)) < hi:
            if not skip:
                return text
            skip -= 1
    raise AssertionError("no such prompt")


def _capped(items, n):
    """The deterministic cap, computed here: the n items with the smallest sha1(prompt + chosen)."""
    return sorted(items, key=lambda p: hashlib.sha1((p.prompt + p.chosen).encode()).hexdigest())[:n]


def _msg(problem, file=None, row=None, field=None, fix=""):
    where = ", ".join(x for x in (file and f"file {file}", row is not None and f"row {row}", field and f"field '{field}'") if x)
    return (f"{where}: {problem}" if where else problem) + (f" ({fix})" if fix else "")


def _raises(exc_type, fn, *args, **kw):
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    assert type(info.value) is exc_type
    return info.value


def _data_error(fn, *args, **kw) -> DataError:
    return _raises(DataError, fn, *args, **kw)


def _jsonl(path: Path, rows, lines=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n" if lines is None else lines)
    return path


def _json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _read(path):
    return list(common.read_records(Path(path)))


# ---------------------------------------------------------------- common: text and hash helpers


def test_normalize_prompt_collapses_whitespace_and_lowercases():
    assert common.normalize_prompt("  How DO\t\tI\n bake  Bread?  ") == "how do i bake bread?"
    assert common.normalize_prompt("A\u3000B") == "a b"


def test_visible_text_drops_each_kind_of_invisible_character():
    vt = common.visible_text
    assert vt("a\u3000b\u2028c\u2029d\u00a0e") == "a b c d e"  # Zs, Zl, Zp: shown as a space
    assert vt("a\x07b\x00c\x7fd") == "abcd"  # Cc
    assert vt("a\u200bb\u202ec\u2066d\ufeffe") == "abcde"  # Cf
    assert vt("a\u0378b") == "ab"  # Cn (unassigned)
    assert vt("a\ud800b") == "ab"  # Cs (a lone surrogate)
    fillers = [0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2800, 0x3164, 0xFFA0, 0xFE00, 0xFE0F, 0xE0100, 0xE01EF]
    for cp in fillers:
        assert vt(f"x{chr(cp)}y") == "xy", hex(cp)
    assert vt("x\ufe10y") == "x\ufe10y"  # just past the variation selectors: a visible comma form
    assert vt("a\tb\nc\r\nd") == "a b c d"  # tab, newline and CR are kept as whitespace, then collapsed
    assert vt("  \t a  b \n ") == "a b"
    assert vt("\u200b\u202e \x07") == ""
    assert vt("Zz") == "Zz"


def test_check_visible_returns_the_value_or_names_file_row_and_field():
    assert common.check_visible("  hi\u200b ", "f.jsonl", 2, "prompt") == "  hi\u200b "
    e = _data_error(common.check_visible, " \t ", Path("/d/f.jsonl"), 3, "prompt")
    assert str(e) == _msg("empty or whitespace-only text", "/d/f.jsonl", 3, "prompt", "fill it or remove the row")
    assert (e.file, e.row, e.field) == ("/d/f.jsonl", 3, "prompt")
    e = _data_error(common.check_visible, "\u200b\u202e", "/d/f.jsonl", None, "Question")
    assert str(e) == _msg("nothing visible (only control, zero-width or bidi characters)", "/d/f.jsonl", None, "Question",
                          "fill it or remove the row")
    assert e.row is None
    e = _data_error(common.check_visible, "", "g.csv", 0, "chosen")
    assert str(e) == "file g.csv, row 0, field 'chosen': empty or whitespace-only text (fill it or remove the row)"


def test_prompt_bucket_is_sha1_of_the_normalised_prompt_mod_100():
    for text in ("How do I bake bread?", "  HOW do i   bake bread? ", "x", "Tell me a joke", "a" * 50):
        want = int(hashlib.sha1(" ".join(text.split()).lower().encode()).hexdigest(), 16) % 100
        assert common.prompt_bucket(text) == want
    assert common.prompt_bucket("Hello World") == common.prompt_bucket(" hello   world")


@pytest.mark.parametrize("bucket,fold", [(0, "train"), (59, "train"), (60, "scorer"), (79, "scorer"), (80, "dual"), (87, "dual"),
                                         (88, "eval"), (99, "eval")])
def test_fold_of_at_and_beside_each_bound(bucket, fold):
    prompt = _find("Boundary prompt", bucket, bucket + 1)
    assert common.prompt_bucket(prompt) == bucket
    assert common.fold_of(prompt) == fold
    assert common.fold_of(prompt.upper()) == fold


def test_fold_of_custom_bounds_and_the_last_fold_past_them():
    p50 = _find("Custom", 50, 51)
    assert common.fold_of(p50, {"a": 50, "b": 51}) == "b"
    assert common.fold_of(p50, {"a": 51, "b": 60}) == "a"
    assert common.fold_of(p50, {"a": 10, "b": 20, "c": 30}) == "c"  # past every bound: the last fold


def test_split_hash_is_sha256_of_the_sorted_unique_normalised_prompts():
    items = ["Zeta  prompt", "alpha", "ALPHA", " beta "]
    want = hashlib.sha256("alpha\nbeta\nzeta prompt".encode()).hexdigest()[:12]
    assert common.split_hash(items) == want
    assert common.split_hash(list(reversed(items))) == want
    assert common.split_hash(["one"]) == hashlib.sha256(b"one").hexdigest()[:12]


def test_resolve_local_picks_the_first_candidate_present_or_the_folder(tmp_path, monkeypatch):
    assert common.resolve_local(None, "a") is None
    assert common.resolve_local("", "a") is None
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    assert common.resolve_local(str(tmp_path), "a", "b", "c") == tmp_path / "b"
    assert common.resolve_local(str(tmp_path), "c", "b") == tmp_path / "c"
    assert common.resolve_local(str(tmp_path), "a") == tmp_path
    assert common.resolve_local(str(tmp_path)) == tmp_path
    monkeypatch.setenv("HOME", str(tmp_path))
    assert common.resolve_local("~/b", "zz") == tmp_path / "b"
    missing = tmp_path / "nope"
    e = _raises(BenchError, common.resolve_local, str(missing), "a")
    assert str(e) == f"data dir {missing} does not exist: fix --data-dir / BENCH_DATA_DIR"


@pytest.mark.parametrize("value,offline", [(None, False), ("0", False), ("", False), ("false", False), ("False", False),
                                           ("1", True), ("true", True), ("FALSE", True), ("yes", True)])
def test_hub_offline_reads_hf_hub_offline(monkeypatch, value, offline):
    if value is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert common.hub_offline() is offline


# ---------------------------------------------------------------- common: read_records


def test_jsonl_rows_keep_their_line_numbers_skip_blank_lines_and_a_bom(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n   \n{"b": "\xc3\xa9"}\n{"c": 3}\n')
    assert _read(p) == [(0, {"a": 1}), (3, {"b": "\u00e9"}), (4, {"c": 3})]
    one = _jsonl(tmp_path / "one.jsonl", [{"x": 1}])
    assert _read(one) == [(0, {"x": 1})]


def test_gzipped_jsonl_and_json_lists_are_read(tmp_path):
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}\n'))
    assert _read(gz) == [(0, {"a": 1}), (1, {"a": 2})]
    js = tmp_path / "b.json"
    js.write_bytes(b'\xef\xbb\xbf[{"a": 1}, {"b": [2]}]')
    assert _read(js) == [(0, {"a": 1}), (1, {"b": [2]})]
    jgz = tmp_path / "c.json.gz"
    jgz.write_bytes(gzip.compress(b'[{"z": 0}]'))
    assert _read(jgz) == [(0, {"z": 0})]


def test_parquet_rows_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]), p)
    assert _read(p) == [(0, {"a": 1, "b": "x"}), (1, {"a": 2, "b": "y"})]


def test_a_damaged_parquet_file_names_the_file(tmp_path):
    import pyarrow.parquet as pq

    p = tmp_path / "bad.parquet"
    p.write_bytes(b"PAR1 this is not a parquet file, it only starts like one and goes on long enough to be cut\nsecond line")
    try:
        pq.read_table(p)
    except Exception as exc:  # the library's own first line, cut to 80 characters
        first = str(exc).splitlines()[0][:80]
    e = _data_error(_read, p)
    assert str(e) == _msg(f"not a readable parquet file ({first})", str(p), fix="re-download or re-export it")
    assert (e.file, e.row, e.field) == (str(p), None, None)


def test_a_file_with_no_rows_is_refused(tmp_path):
    for name, content in (("e.jsonl", b"\n \n"), ("e.json", b"[]")):
        p = tmp_path / name
        p.write_bytes(content)
        e = _data_error(_read, p)
        assert str(e) == _msg("the file holds no rows", str(p), fix="fill it or remove it from the data folder")
        assert (e.file, e.row) == (str(p), None)


def test_jsonl_errors_name_file_and_row(tmp_path):
    p = _jsonl(tmp_path / "x.jsonl", None, lines='{"a": 1}\n{not json\n')
    try:
        json.loads("{not json\n")
    except json.JSONDecodeError as exc:
        why = exc.msg
    e = _data_error(_read, p)
    assert str(e) == _msg(f"invalid JSON ({why})", str(p), 1, fix="fix or remove the line")
    assert (e.file, e.row, e.field) == (str(p), 1, None)
    p = _jsonl(tmp_path / "y.jsonl", None, lines='{"a": 1}\n\n[1, 2]\n')
    e = _data_error(_read, p)
    assert str(e) == _msg("expected a JSON object", str(p), 2, fix="one JSON object per line")
    p = tmp_path / "z.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2}\n{"b": "ok\xff"}\n')
    e = _data_error(_read, p)
    assert str(e) == _msg("not UTF-8 text (byte b'\\xff' at offset 9 of the line)", str(p), 2, fix="re-encode the file as UTF-8")
    assert e.row == 2
    p = tmp_path / "bom.jsonl"  # a byte-order mark is skipped on the first line only: further down it is a damaged line
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\xef\xbb\xbf{"a": 2}\n')
    try:
        json.loads('\ufeff{"a": 2}')
    except json.JSONDecodeError as exc:
        why = exc.msg
    assert str(_data_error(_read, p)) == _msg(f"invalid JSON ({why})", str(p), 1, fix="fix or remove the line")
    p = tmp_path / "w.jsonl"
    p.write_bytes(b'\xfe{"a": 1}\n')
    assert str(_data_error(_read, p)) == _msg("not UTF-8 text (byte b'\\xfe' at offset 0 of the line)", str(p), 0,
                                              fix="re-encode the file as UTF-8")


def test_json_list_errors_name_the_file_and_item(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('[{"a": 1},\n {"a": 2,}]')
    try:
        json.loads('[{"a": 1},\n {"a": 2,}]')
    except json.JSONDecodeError as exc:
        why = f"{exc.msg} at line {exc.lineno}"
    assert "at line 2" in why
    e = _data_error(_read, p)
    assert str(e) == _msg(f"invalid JSON ({why})", str(p), fix="fix the file") and e.row is None
    p.write_text('{"a": 1}')
    assert str(_data_error(_read, p)) == _msg("expected a JSON list of objects", str(p), fix="wrap the rows in [...]")
    p.write_text('[{"a": 1}, {"a": 2}, "three"]')
    e = _data_error(_read, p)
    assert str(e) == _msg("expected a JSON object", str(p), 2, fix="every list item is one row object") and e.row == 2
    p.write_bytes(b'[{"a": "\xc3\xa9\xff"}]')
    e = _data_error(_read, p)
    assert str(e) == _msg("not UTF-8 text (byte b'\\xff' at byte offset 10)", str(p), fix="re-encode the file as UTF-8")
    assert e.row is None


def test_damaged_gzip_names_the_last_row_read(tmp_path):
    p = tmp_path / "t.jsonl.gz"
    p.write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}\n')[:-12])
    try:
        gzip.decompress(p.read_bytes())
    except EOFError as exc:
        why = str(exc)
    e = _data_error(_read, p)
    assert str(e) == _msg(f"damaged or truncated gzip after row 0 ({why})", str(p), fix="re-download or re-compress it")
    p = tmp_path / "n.jsonl.gz"
    p.write_bytes(b'{"a": 1}\n')
    e = _data_error(_read, p)
    assert str(e).startswith(f"file {p}: damaged or truncated gzip after row 0 (Not a gzipped file")
    assert str(e).endswith("(re-download or re-compress it)")
    # a good first member then garbage: row 1 was read before the damage
    p = tmp_path / "m.jsonl.gz"
    good = b"".join(b'{"row": %d, "pad": "%s"}\n' % (i, b"x" * 40) for i in range(3))
    p.write_bytes(gzip.compress(good) + b"\x1f\x8b\x08\x00garbage-member")
    rows = []
    with pytest.raises(DataError) as info:
        for row, rec in common.read_records(p):
            rows.append(row)
    assert rows == [0, 1, 2] and "damaged or truncated gzip after row 2" in str(info.value)


# ---------------------------------------------------------------- common: need, need_text


def test_need_returns_the_value_of_an_accepted_type():
    path = Path("/d/r.jsonl")
    assert common.need({"x": 3}, "x", int, path, 0) == 3
    assert common.need({"x": True}, "x", bool, path, 0) is True
    assert common.need({"x": False}, "x", (int, bool), path, 0) is False
    assert common.need({"x": "s"}, "x", (int, str), path, 0) == "s"
    assert common.need({"x": None, "y": 0}, "y", int, path, 0) == 0


def test_need_errors_name_file_row_field_and_the_json_type_to_write():
    path = Path("/d/r.jsonl")
    e = _data_error(common.need, {"y": 1}, "x", int, path, 4)
    assert str(e) == _msg("missing column", "/d/r.jsonl", 4, "x", "every row needs it for this schema")
    assert (e.file, e.row, e.field) == ("/d/r.jsonl", 4, "x")
    e = _data_error(common.need, {"x": True}, "x", int, path, 1)
    assert str(e) == _msg("expected int, got bool 'True'", "/d/r.jsonl", 1, "x", "write a JSON int")
    e = _data_error(common.need, {"x": 1}, "x", bool, path, 2)
    assert str(e) == _msg("expected bool, got int '1'", "/d/r.jsonl", 2, "x", "write a JSON true/false")
    e = _data_error(common.need, {"x": "z" * 50}, "x", (int, float), path, 0)
    assert str(e) == _msg(f"expected int/float, got str '{'z' * 40}'", "/d/r.jsonl", 0, "x", "write a JSON int/float")
    e = _data_error(common.need, {"x": None}, "x", (str, bool), path, 0)
    assert str(e) == _msg("expected str/bool, got NoneType 'None'", "/d/r.jsonl", 0, "x", "write a JSON true/false")


def test_need_text_refuses_a_non_string_or_an_invisible_prompt():
    path = Path("/d/r.jsonl")
    assert common.need_text({"prompt": " Hi "}, "prompt", path, 0) == " Hi "
    e = _data_error(common.need_text, {"prompt": 5}, "prompt", path, 2)
    assert str(e) == _msg("expected str, got int '5'", "/d/r.jsonl", 2, "prompt", "write a JSON str")
    e = _data_error(common.need_text, {"prompt": "\u200b"}, "prompt", path, 3)
    assert str(e) == _msg("nothing visible (only control, zero-width or bidi characters)", "/d/r.jsonl", 3, "prompt",
                          "fill it or remove the row")
    e = _data_error(common.need_text, {}, "question", path, 1)
    assert (e.file, e.row, e.field) == ("/d/r.jsonl", 1, "question")


# ---------------------------------------------------------------- common: dedupe, split_pairs, cap


def test_dedupe_keys_on_normalised_prompt_and_stripped_responses():
    a = PP("How do I?", "Yes.", "No.")
    pairs = [a, PP("  how DO i? ", " Yes.", "No. \n"), PP("How do I?", "Yes.", "Never."), PP("How do I?", "No.", "Yes."), a]
    out, dropped = common.dedupe(pairs)
    assert out == [pairs[0], pairs[2], pairs[3]] and out[0] is pairs[0]
    assert dropped == 2
    assert common.dedupe([]) == ([], 0)


def test_split_pairs_assigns_each_pair_to_its_hash_fold():
    bounds = {"a": 30, "b": 70, "c": 100}
    pa, pb, pc = _find("Split", 0, 30), _find("Split", 30, 70), _find("Split", 70, 100)
    pairs = [PP(pc, "1", "2"), PP(pa, "3", "4"), PP(pb, "5", "6"), PP(pa.upper(), "7", "8")]
    assert common.split_pairs(pairs, bounds) == {"a": [pairs[1], pairs[3]], "b": [pairs[2]], "c": [pairs[0]]}
    assert list(common.split_pairs([], bounds)) == ["a", "b", "c"]
    tr, sc, du, ev = _find("Default", 0, 60), _find("Default", 60, 80), _find("Default", 80, 88), _find("Default", 88, 100)
    pairs = [PP(ev, "e", "x"), PP(du, "d", "x"), PP(sc, "s", "x"), PP(tr, "t", "x")]
    assert common.split_pairs(pairs) == {"train": [pairs[3]], "scorer": [pairs[2]], "dual": [pairs[1]], "eval": [pairs[0]]}


def test_cap_keeps_the_smallest_hashes_and_leaves_short_lists_alone():
    items = [PP(f"Prompt {i}", f"answer {i}", "r") for i in range(6)]
    want = sorted(items, key=lambda p: hashlib.sha1((p.prompt + p.chosen).encode()).hexdigest())
    assert want[:3] != items[:3]
    assert common.cap(items, 3) == want[:3]
    assert common.cap(items, 1) == want[:1]
    assert common.cap(items, 5) == want[:5]
    assert common.cap(items, 6) is items
    assert common.cap(items, 7) is items
    assert common.cap(items, 0) is items
    assert common.cap(items, None) is items
    # items without a chosen response are keyed on the prompt alone
    ns = [SimpleNamespace(prompt=f"q{i}") for i in range(5)]
    want = sorted(ns, key=lambda p: hashlib.sha1(p.prompt.encode()).hexdigest())[:2]
    assert common.cap(ns, 2) == want
    ns = [SimpleNamespace(chosen=f"c{i}") for i in range(5)]
    want = sorted(ns, key=lambda p: hashlib.sha1(p.chosen.encode()).hexdigest())[:2]
    assert common.cap(ns, 2) == want


# ---------------------------------------------------------------- PKU-SafeRLHF rows


def _row(prompt, r0, r1, s0, s1, better, safer, sev=None, cats=None):
    rec = {"prompt": prompt, "response_0": r0, "response_1": r1, "is_response_0_safe": s0, "is_response_1_safe": s1,
           "better_response_id": better, "safer_response_id": safer}
    if sev is not None:
        rec["response_0_severity_level"], rec["response_1_severity_level"] = sev
    if cats is not None:
        rec["response_0_harm_category"], rec["response_1_harm_category"] = cats
    return rec


def test_category_is_the_first_flagged_harm_in_sorted_order():
    rec = {"response_0_harm_category": {"Violence": False, "Property Crimes": True, "Cybercrime": 1},
           "response_1_harm_category": {"Violence": False, "Privacy": 0}}
    assert pku_saferlhf._category(rec, 0) == "Cybercrime"
    assert pku_saferlhf._category(rec, 1) is None
    assert pku_saferlhf._category({"response_0_harm_category": ["Crime"]}, 0) is None
    assert pku_saferlhf._category({}, 1) is None
    assert pku_saferlhf._category({"response_1_harm_category": {"B": True, "A": True}}, 1) == "A"


def test_pairs_from_a_v1_row_carry_labels_severities_category_and_source():
    cats = ({"Violence": False, "Property Crimes": True, "Cybercrime": True}, {"Violence": False})
    rec = _row("How do I pick a lock?", "Use a pick.", "I can't help.", False, True, 0, 1, sev=(2, 0), cats=cats)
    reward, cost = pku_saferlhf.pairs_from_row(rec, Path("/d/rows.jsonl"), 3)
    assert reward == PP("How do I pick a lock?", "Use a pick.", "I can't help.", False, True, 2, 0, "Cybercrime", "rows.jsonl:3")
    assert cost == PP("How do I pick a lock?", "I can't help.", "Use a pick.", True, False, 0, 2, "Cybercrime", "rows.jsonl:3")
    # the rejected response's category wins when both are flagged
    rec = _row(" Q? ", "A.", "B.", True, False, 1, 0, sev=(1, 3), cats=({"Crime": True}, {"Privacy": True}))
    reward, cost = pku_saferlhf.pairs_from_row(rec, Path("x/v1.json"), 0, require_v1=True)
    assert reward == PP(" Q? ", "B.", "A.", False, True, 3, 1, "Crime", "v1.json:0")
    assert cost == PP(" Q? ", "A.", "B.", True, False, 1, 3, "Privacy", "v1.json:0")


def test_pairs_from_a_v0_row_have_no_severity_or_category():
    rec = _row("P?", "a", "b", True, True, 1, 1)
    reward, cost = pku_saferlhf.pairs_from_row(rec, Path("v0.jsonl"), 7)
    assert reward == cost == PP("P?", "b", "a", True, True, None, None, None, "v0.jsonl:7")
    reward, cost = pku_saferlhf.pairs_from_row(_row("P?", "a", "b", False, True, 0, 0), Path("v0.jsonl"), 8)
    assert reward == cost == PP("P?", "a", "b", False, True, None, None, None, "v0.jsonl:8")


def test_a_v0_row_is_refused_where_v1_rows_are_required():
    path = Path("/d/v0.jsonl")
    for rec in (_row("P?", "a", "b", True, True, 0, 0), dict(_row("P?", "a", "b", True, True, 0, 0), response_0_severity_level=1),
                dict(_row("P?", "a", "b", True, True, 0, 0), response_1_severity_level=1)):
        e = _data_error(pku_saferlhf.pairs_from_row, rec, path, 5, require_v1=True)
        assert str(e) == _msg("a PKU-SafeRLHF v0 row (no severity levels) where the config needs v1 rows", "/d/v0.jsonl", 5,
                              "response_0_severity_level", "use the v1 files, or --set data.subset=default for v0 data")
    assert pku_saferlhf.pairs_from_row(_row("P?", "a", "b", True, True, 0, 0), path, 5, False)[0].chosen == "a"


@pytest.mark.parametrize("change,problem,field", [
    ({"better_response_id": 2}, "must be 0 or 1, got 2", "better_response_id"),
    ({"safer_response_id": -1}, "must be 0 or 1, got -1", "safer_response_id"),
    ({"safer_response_id": True}, "expected int, got bool 'True'", "safer_response_id"),
    ({"is_response_1_safe": 1}, "expected bool, got int '1'", "is_response_1_safe"),
    ({"response_1": ["x"]}, "expected str, got list \"['x']\"", "response_1"),
    ({"prompt": "  "}, "empty or whitespace-only text", "prompt"),
])
def test_a_bad_pku_field_is_named(change, problem, field):
    rec = dict(_row("P?", "a", "b", True, False, 0, 1), **change)
    e = _data_error(pku_saferlhf.pairs_from_row, rec, Path("/d/r.jsonl"), 9)
    assert str(e).startswith(_msg(problem, "/d/r.jsonl", 9, field)) and (e.file, e.row, e.field) == ("/d/r.jsonl", 9, field)
    if "must be" in problem:
        assert str(e) == _msg(problem, "/d/r.jsonl", 9, field)


def test_a_missing_pku_field_is_named():
    for field in pku_saferlhf.ROW_FIELDS:
        rec = _row("P?", "a", "b", True, False, 0, 1)
        del rec[field]
        e = _data_error(pku_saferlhf.pairs_from_row, rec, Path("/d/r.jsonl"), 1)
        assert str(e) == _msg("missing column", "/d/r.jsonl", 1, field, "every row needs it for this schema")


def test_read_local_reads_every_schema_and_counts_rows(tmp_path):
    folder = tmp_path / "pku"
    _jsonl(folder / "b_rows.jsonl", [_row("Q1?", "a1", "b1", True, False, 1, 0, sev=(0, 1)), {"prompt": "Q2?", "response": "sft"}])
    _json(folder / "a_pairs.json", [{"prompt": "Q3?", "safe_response": "no", "unsafe_response": "yes"}])
    _jsonl(folder / "sub" / "c_realign.jsonl", [{"prompt": "Q4?", "response": ["safer", "other"]}, {"prompt": "Q5?", "response": "x"},
                                                {"prompt": "Q6?", "response": "y"}])
    gz = folder / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(json.dumps({"prompt": "Q7?", "safe_response": "s", "unsafe_response": "u"}).encode() + b"\n"))
    (folder / "notes.txt").write_text("not data")
    (folder / "e.csv").write_text("prompt\nQ9?\n")
    (folder / "f.json.gz").write_bytes(b"ignored: only .jsonl.gz is read compressed")
    (folder / "dir.json").mkdir()  # a folder with a data-file name is not a file
    _jsonl(folder / "dir.json" / "g.jsonl", [{"prompt": "Q8?", "safe_response": "s8", "unsafe_response": "u8"}])
    counts = {"keep": 1}
    reward, cost = pku_saferlhf.read_local(folder, counts)
    assert reward == [PP("Q1?", "b1", "a1", False, True, 1, 0, None, "b_rows.jsonl:0")]
    assert cost == [PP("Q3?", "no", "yes", True, False, source="a_pairs.json:0"),
                    PP("Q1?", "a1", "b1", True, False, 0, 1, None, "b_rows.jsonl:0"),
                    PP("Q7?", "s", "u", True, False, source="d.jsonl.gz:0"),
                    PP("Q8?", "s8", "u8", True, False, source="g.jsonl:0"),
                    PP("Q4?", "safer", "other", True, False, source="c_realign.jsonl:0")]
    assert counts == {"keep": 1, "skipped_unpaired_rows": 3,
                      "rows_per_file": {"a_pairs.json": 1, "b_rows.jsonl": 2, "d.jsonl.gz": 1, "dir.json/g.jsonl": 1, "sub/c_realign.jsonl": 3}}


def test_read_local_parquet_and_require_v1(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pku"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([_row("Q?", "a", "b", True, False, 0, 1, sev=(0, 2))]), folder / "t.parquet")
    counts = {}
    reward, cost = pku_saferlhf.read_local(folder, counts, require_v1=True)
    assert reward == [PP("Q?", "a", "b", True, False, 0, 2, None, "t.parquet:0")] and counts == {"rows_per_file": {"t.parquet": 1}}
    _jsonl(folder / "v0.jsonl", [_row("Q?", "a", "b", True, False, 0, 1)])
    e = _data_error(pku_saferlhf.read_local, folder, {}, require_v1=True)
    assert (e.file, e.row, e.field) == (str(folder / "v0.jsonl"), 0, "response_0_severity_level")
    assert len(pku_saferlhf.read_local(folder, {})[0]) == 2


def test_read_local_refuses_an_empty_folder_and_unknown_or_half_rows(tmp_path):
    folder = tmp_path / "pku"
    folder.mkdir()
    (folder / "readme.md").write_text("x")
    e = _raises(BenchError, pku_saferlhf.read_local, folder, {})
    assert str(e) == f"no .json/.jsonl/.parquet files under {folder}: point --data-dir at a folder holding PKU-SafeRLHF files"
    bad = folder / "bad.jsonl"
    cases = [
        ({"prompt": "Q?", "better_response_id": 0}, "missing column", "response_0"),
        ({"prompt": "Q?", "response_0": "a"}, "missing column", "response_1"),
        ({"prompt": "Q?", "safe_response": "s"}, "missing column", "unsafe_response"),
        ({"prompt": "Q?", "unsafe_response": "u"}, "missing column", "safe_response"),
        ({"prompt": "Q?", "safe_response": "s", "unsafe_response": 3}, "expected str, got int '3'", "unsafe_response"),
        ({"prompt": "Q?", "safe_response": None, "unsafe_response": "u"}, "expected str, got NoneType 'None'", "safe_response"),
        ({"prompt": "\u200b", "safe_response": "s", "unsafe_response": "u"}, "nothing visible", "prompt"),
        ({"prompt": "", "response": ["a", "b"]}, "empty or whitespace-only text", "prompt"),
        ({"prompt": "Q?", "response": ["a", "b", "c"]}, "expected [safer_response, other_response]", "response"),
        ({"prompt": "Q?", "response": ["a"]}, "expected [safer_response, other_response]", "response"),
        ({"prompt": "Q?", "response": ["a", 2]}, "expected [safer_response, other_response]", "response"),
    ]
    for rec, problem, field in cases:
        _jsonl(bad, [{"prompt": "ok?", "safe_response": "s", "unsafe_response": "u"}, rec])
        e = _data_error(pku_saferlhf.read_local, folder, {})
        assert (e.file, e.row, e.field) == (str(bad), 1, field), rec
        assert str(e).startswith(_msg(problem, str(bad), 1, field)), str(e)
        if field == "response":
            assert str(e) == _msg(problem, str(bad), 1, field)
    cols = {f"column_{c}_with_a_long_name": 1 for c in "edcba"}
    _jsonl(bad, [cols])
    e = _data_error(pku_saferlhf.read_local, folder, {})
    listed = ", ".join(sorted(cols))[:120]
    assert str(e) == _msg(f"unrecognised schema (columns: {listed})", str(bad), 0,
                          fix=f"expected PKU-SafeRLHF columns {', '.join(pku_saferlhf.ROW_FIELDS)} or prompt/safe_response/unsafe_response")
    assert e.field is None and len(listed) == 120
    _jsonl(bad, [{"prompt": "Q?", "response": {"a": 1}}])
    assert "unrecognised schema (columns: prompt, response)" in str(_data_error(pku_saferlhf.read_local, folder, {}))


class _Bounded(list):
    """A fold that fails, instead of growing without end, when a pass over it extends it with its own pairs."""

    def extend(self, items):
        for p in items:
            if len(self) > 50:
                raise AssertionError("the eval fold was extended from itself")
            self.append(p)


def test_force_into_eval_moves_every_pair_of_the_named_prompts():
    a, b, c, d, e = (PP(p, "y", "n") for p in ("A?", "B?", "Keep?", "D?", "E?"))
    a2 = PP("  a? ", "y2", "n")
    # the eval fold already holds a named prompt, and a fold after eval is moved from too
    folds = {"train": [a, c, a2], "scorer": [b], "eval": _Bounded([e]), "dual": [d]}
    moved = pku_saferlhf.force_into_eval(folds, {"a?", "b?", "d?", "e?"})
    assert moved == 4
    assert folds == {"train": [c], "scorer": [], "eval": [e, a, a2, b, d], "dual": []}
    assert pku_saferlhf.force_into_eval(folds, set()) == 0 and folds["eval"] == [e, a, a2, b, d]


def test_clean_drops_identical_label_inconsistent_and_duplicate_pairs():
    pairs = [PP("Q?", "a", "b", True, False), PP("Q?", " a ", "a", True, True), PP("R?", "x", "y", False, True),
             PP("S?", "x", "y", None, True), PP("T?", "x", "y", False, None), PP(" q? ", "a", "b ", False, True), PP("U?", "u", "v")]
    counts = {}
    assert pku_saferlhf.clean(pairs, counts, "cost") == [pairs[0], pairs[3], pairs[4], pairs[6]]
    assert counts == {"cost_dropped_identical": 1, "cost_dropped_label_inconsistent": 2, "cost_dropped_duplicate": 0}
    counts = {"x": 0}
    assert pku_saferlhf.clean(pairs, counts, "reward") == [pairs[0], pairs[2], pairs[3], pairs[4], pairs[6]]
    assert counts == {"x": 0, "reward_dropped_identical": 1, "reward_dropped_duplicate": 1}


# ---------------------------------------------------------------- PKU-SafeRLHF load()


def _pku_cfg(data_dir, subset="default", revision=None, train=0, scorer=0, dual=0):
    return SimpleNamespace(data=SimpleNamespace(data_dir=None if data_dir is None else str(data_dir), subset=subset, revision=revision,
                                                max_train_pairs=train, max_scorer_pairs=scorer, max_dual_prompts=dual))


PT, PT2, PT3 = (_find("Train question", 0, 60, k) for k in range(3))
PS, PS2 = (_find("Scorer question", 60, 80, k) for k in range(2))
PD, PD2 = (_find("Dual question", 80, 88, k) for k in range(2))
PE = _find("Eval question", 88, 100)


def _pku_rows():
    return [
        _row(PT, "Here is how.", "I won't help.", False, True, 0, 1, sev=(2, 0), cats=({"Crime": True}, {})),
        _row(PS, "Answer S.", "Refuse S.", True, True, 1, 0, sev=(0, 0), cats=({}, {})),
        _row(PD, "Answer D.", "Refuse D.", True, False, 0, 0, sev=(0, 1), cats=({}, {"Privacy": True})),
        _row(PE, "Answer E.", "Refuse E.", True, False, 0, 0, sev=(0, 1), cats=({}, {})),
        _row("  " + PT.upper() + " ", " Here is how. ", "I won't help.", False, True, 0, 1, sev=(2, 0), cats=({}, {})),  # duplicate
        _row(PT2, "Same.", "Same. ", True, True, 0, 1, sev=(0, 0), cats=({}, {})),  # identical responses
        _row(PT3, "Safe one.", "Unsafe one.", True, False, 1, 1, sev=(0, 3), cats=({}, {})),  # "safer" = the unsafe one
        _row(PS2, "Answer S2.", "Refuse S2.", True, False, 0, 0, sev=(0, 1), cats=({}, {})),
        _row(PD2, "Answer D2.", "Refuse D2.", True, False, 0, 0, sev=(0, 1), cats=({}, {})),
    ]


def _pku_folder(root: Path) -> Path:
    _jsonl(root / "pku_saferlhf" / "v1.jsonl", _pku_rows())
    _json(root / "pku_saferlhf" / "sft.json", [{"prompt": "Write a poem.", "response": "Roses."}])
    return root / "pku_saferlhf"


def _pku_expected():
    s = "v1.jsonl:"
    reward = {"train": [PP(PT, "Here is how.", "I won't help.", False, True, 2, 0, "Crime", s + "0"),
                        PP(PT3, "Unsafe one.", "Safe one.", False, True, 3, 0, None, s + "6")],
              "scorer": [PP(PS, "Refuse S.", "Answer S.", True, True, 0, 0, None, s + "1"),
                         PP(PS2, "Answer S2.", "Refuse S2.", True, False, 0, 1, None, s + "7")],
              "dual": [PP(PD, "Answer D.", "Refuse D.", True, False, 0, 1, "Privacy", s + "2"),
                       PP(PD2, "Answer D2.", "Refuse D2.", True, False, 0, 1, None, s + "8")],
              "eval": [PP(PE, "Answer E.", "Refuse E.", True, False, 0, 1, None, s + "3")]}
    cost = {"train": [PP(PT, "I won't help.", "Here is how.", True, False, 0, 2, "Crime", s + "0")],
            "scorer": [PP(PS, "Answer S.", "Refuse S.", True, True, 0, 0, None, s + "1"),
                       PP(PS2, "Answer S2.", "Refuse S2.", True, False, 0, 1, None, s + "7")],
            "dual": [PP(PD, "Answer D.", "Refuse D.", True, False, 0, 1, "Privacy", s + "2"),
                     PP(PD2, "Answer D2.", "Refuse D2.", True, False, 0, 1, None, s + "8")],
            "eval": [PP(PE, "Answer E.", "Refuse E.", True, False, 0, 1, None, s + "3")]}
    return reward, cost


def _sorted_prompts(*eps):
    return sorted(eps, key=lambda e: " ".join(e.prompt.split()).lower())


def test_pku_load_from_a_local_folder(tmp_path):
    folder = _pku_folder(tmp_path)
    b = pku_saferlhf.load(_pku_cfg(tmp_path))
    reward, cost = _pku_expected()
    assert (b.name, b.source, b.default_cost_scorer) == ("pku-saferlhf", str(folder), "minilm-cost")
    assert b.reward_pairs == reward and b.cost_pairs == cost
    assert b.prompts == {"train": _sorted_prompts(EvalPrompt(PT, "Crime"), EvalPrompt(PT3)),
                         "scorer": _sorted_prompts(EvalPrompt(PS), EvalPrompt(PS2)),
                         "dual": _sorted_prompts(EvalPrompt(PD, "Privacy"), EvalPrompt(PD2)),
                         "eval": [EvalPrompt(PE)]}
    assert b.notes == []
    assert b.counts == {
        "rows_per_file": {"sft.json": 1, "v1.jsonl": 9}, "skipped_unpaired_rows": 1,
        "reward_dropped_identical": 1, "reward_dropped_duplicate": 1,
        "cost_dropped_identical": 1, "cost_dropped_label_inconsistent": 1, "cost_dropped_duplicate": 1,
        "folds": {"train": {"reward_pairs": 2, "cost_pairs": 1, "prompts": 2}, "scorer": {"reward_pairs": 2, "cost_pairs": 2, "prompts": 2},
                  "dual": {"reward_pairs": 2, "cost_pairs": 2, "prompts": 2}, "eval": {"reward_pairs": 1, "cost_pairs": 1, "prompts": 1}}}


def test_pku_load_reads_the_folder_itself_or_its_other_name(tmp_path):
    _jsonl(tmp_path / "PKU-SafeRLHF" / "r.jsonl", [_row(PE, "a", "b", True, False, 0, 0)])
    assert pku_saferlhf.load(_pku_cfg(tmp_path)).source == str(tmp_path / "PKU-SafeRLHF")
    _jsonl(tmp_path / "flat" / "r.jsonl", [_row(PE, "a", "b", True, False, 0, 0)])
    b = pku_saferlhf.load(_pku_cfg(tmp_path / "flat"))
    assert b.source == str(tmp_path / "flat") and b.counts["rows_per_file"] == {"r.jsonl": 1}


def test_pku_load_caps_and_notes(tmp_path):
    folder = _pku_folder(tmp_path)
    reward, cost = _pku_expected()
    b = pku_saferlhf.load(_pku_cfg(tmp_path, train=1, scorer=1, dual=1))
    assert b.reward_pairs["train"] == _capped(reward["train"], 1) and b.cost_pairs["train"] == cost["train"]
    assert b.reward_pairs["scorer"] == _capped(reward["scorer"], 1) and b.cost_pairs["scorer"] == _capped(cost["scorer"], 1)
    assert b.reward_pairs["dual"] == reward["dual"] and b.reward_pairs["eval"] == reward["eval"]
    assert b.prompts["dual"] == _sorted_prompts(EvalPrompt(PD, "Privacy"), EvalPrompt(PD2))[:1]
    assert b.notes == []
    assert b.counts["folds"]["train"] == {"reward_pairs": 1, "cost_pairs": 1, "prompts": len({PT} | {p.prompt for p in _capped(reward["train"], 1)})}
    assert b.counts["folds"]["dual"] == {"reward_pairs": 2, "cost_pairs": 2, "prompts": 1}
    b = pku_saferlhf.load(_pku_cfg(tmp_path, train=2))
    assert b.reward_pairs["train"] == reward["train"] and b.reward_pairs["scorer"] == reward["scorer"]
    assert b.notes == [f"only 1 cost training pairs in {folder} (profile asks for 2); the full set is on the hub"]
    b = pku_saferlhf.load(_pku_cfg(tmp_path, train=3))
    assert b.notes == [f"only 2 reward training pairs in {folder} (profile asks for 3); the full set is on the hub",
                       f"only 1 cost training pairs in {folder} (profile asks for 3); the full set is on the hub"]


def test_pku_load_needs_v1_rows_for_a_per_model_config(tmp_path):
    _jsonl(tmp_path / "pku_saferlhf" / "v0.jsonl", [_row(PE, "a", "b", True, False, 0, 0)])
    e = _data_error(pku_saferlhf.load, _pku_cfg(tmp_path, subset="alpaca-7b"))
    assert (e.file, e.row, e.field) == (str(tmp_path / "pku_saferlhf" / "v0.jsonl"), 0, "response_0_severity_level")
    assert len(pku_saferlhf.load(_pku_cfg(tmp_path, subset="default")).reward_pairs["eval"]) == 1


class _DS(list):
    """A `datasets.Dataset` stand-in: rows by index, a column by name."""

    def __getitem__(self, key):
        return [r[key] for r in self] if isinstance(key, str) else list.__getitem__(self, key)


def test_pku_load_from_the_hub_moves_published_test_prompts_to_eval(monkeypatch):
    train = _DS([_row(PT, "Sure.", "No.", False, True, 0, 1), _row(PS, "A.", "B.", True, True, 0, 0), _row(PT2, "C.", "D.", True, False, 1, 0)])
    test = _DS([_row(PT2.upper(), "E.", "F.", True, False, 0, 0)])
    calls = []

    def load_split(hub_id, revision, split, *, name=None, data_dir=None):
        calls.append((hub_id, revision, split, name, data_dir))
        return {"train": train, "test": test}[split]

    monkeypatch.setattr(pku_saferlhf, "load_split", load_split)
    b = pku_saferlhf.load(_pku_cfg(None, subset="alpaca-7b"))
    rev = pku_saferlhf.HUB_REVISION
    assert calls == [("PKU-Alignment/PKU-SafeRLHF", rev, "train", "alpaca-7b", None), ("PKU-Alignment/PKU-SafeRLHF", rev, "test", "alpaca-7b", None)]
    assert b.source == f"hub:PKU-Alignment/PKU-SafeRLHF@{rev}/alpaca-7b"
    src = "train:"
    assert b.reward_pairs == {"train": [PP(PT, "Sure.", "No.", False, True, None, None, None, src + "0")],
                              "scorer": [PP(PS, "A.", "B.", True, True, None, None, None, src + "1")], "dual": [],
                              "eval": [PP(PT2, "D.", "C.", False, True, None, None, None, src + "2"),
                                       PP(PT2.upper(), "E.", "F.", True, False, None, None, None, "test:0")]}
    assert b.cost_pairs["eval"] == [PP(PT2, "C.", "D.", True, False, None, None, None, src + "2"),
                                    PP(PT2.upper(), "E.", "F.", True, False, None, None, None, "test:0")]
    assert b.counts["hub_test_pairs_moved_to_eval"] == 4  # its train and test rows, in both views
    assert b.counts["rows_per_file"] == {"hub:PKU-Alignment/PKU-SafeRLHF/alpaca-7b/train": 3, "hub:PKU-Alignment/PKU-SafeRLHF/alpaca-7b/test": 1}
    assert b.prompts["eval"] == [EvalPrompt(PT2)] and "dual" in b.prompts and b.prompts["dual"] == []
    calls.clear()
    b = pku_saferlhf.load(_pku_cfg(None, revision="v0"))
    assert [c[1:4] for c in calls] == [("v0", "train", "default"), ("v0", "test", "default")]
    assert b.source == "hub:PKU-Alignment/PKU-SafeRLHF@v0/default"


def test_pku_hub_refuses_an_unknown_config(monkeypatch):
    monkeypatch.setattr(pku_saferlhf, "load_split", lambda *a, **k: pytest.fail("no hub call for an unknown config"))
    e = _raises(BenchError, pku_saferlhf.load, _pku_cfg(None, subset="alpaca-13b"))
    assert str(e) == "unknown PKU-SafeRLHF config 'alpaca-13b': choose one of default, alpaca-7b, alpaca2-7b, alpaca3-8b (--set data.subset=...)"


# ---------------------------------------------------------------- HH-RLHF


def _hh_cfg(data_dir, revision=None, train=0):
    return SimpleNamespace(data=SimpleNamespace(data_dir=None if data_dir is None else str(data_dir), revision=revision, max_train_pairs=train,
                                                max_scorer_pairs=0, max_dual_prompts=0))


A = "\n\nAssistant:"
MULTI = f"{A} Earlier answer.\n\nHuman: And then?"
HT, HT2 = (_find("Human train", 0, 60, k, wrap=lambda t: f"Human: {t}") for k in range(2))
HE = _find("Human eval", 88, 100, wrap=lambda t: f"Human: {t}")
HM = _find("Human multi", 0, 60, wrap=lambda t: f"Human: {t}{MULTI}")


def _dialogue(prompt, answer, turns=""):
    return f"\n\nHuman: {prompt}{turns}{A} {answer}"


def test_hh_load_splits_each_dialogue_at_its_last_assistant_turn(tmp_path):
    rows = [
        {"chosen": _dialogue(HM, "I can't help with that.", MULTI), "rejected": _dialogue(HM, "Sure, step one.", MULTI)},
        {"chosen": _dialogue(HE, "No."), "rejected": _dialogue(HE, "No.")},  # same answer: dropped
        {"chosen": _dialogue(HE, "Safe."), "rejected": f"{A} Harmful."},  # the rejected text may start with the mark
        {"chosen": _dialogue(HE, " Safe.\n"), "rejected": _dialogue(HE, "Harmful.  ")},  # duplicate after stripping
        {"chosen": _dialogue(HT2, "A."), "rejected": _dialogue(HT2, "A. ")},
    ]
    folder = tmp_path / "hh_rlhf" / "harmless-base"
    _jsonl(folder / "test.jsonl", rows[:3])
    (folder / "train.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows[3:]).encode()))
    (folder / "README.md").write_text("not data")
    b = hh_rlhf.load(_hh_cfg(tmp_path))
    p_t = f"Human: {HM}{MULTI}"
    assert (b.name, b.source, b.default_cost_scorer) == ("hh-rlhf-harmless", str(folder), "minilm-cost")
    assert b.cost_pairs == {"train": [PP(p_t, "I can't help with that.", "Sure, step one.", source="test.jsonl:0")],
                            "scorer": [], "dual": [], "eval": [PP(f"Human: {HE}", "Safe.", "Harmful.", source="test.jsonl:2")]}
    assert b.reward_pairs == {"train": [], "scorer": [], "dual": [], "eval": []}
    assert b.prompts == {"train": [EvalPrompt(p_t)], "scorer": [], "dual": [], "eval": [EvalPrompt(f"Human: {HE}")]}
    assert b.notes == ["HH-RLHF harmless-base has no helpfulness pairs: reward-pair methods cannot train on it"]
    assert b.counts == {"folds": {"train": {"cost_pairs": 1}, "scorer": {"cost_pairs": 0}, "dual": {"cost_pairs": 0}, "eval": {"cost_pairs": 1}}}


def test_hh_keeps_responses_that_differ_only_in_spacing_and_caps_train(tmp_path):
    rows = [{"chosen": _dialogue(HT, "Fine."), "rejected": _dialogue(HT, "Fine!")},
            {"chosen": _dialogue(HT2, "No thanks."), "rejected": _dialogue(HT2, "Okay.")},
            {"chosen": _dialogue(HT2.upper(), "No."), "rejected": _dialogue(HT2, "Okay.")}]
    _jsonl(tmp_path / "hh_rlhf" / "a.jsonl", rows)
    b = hh_rlhf.load(_hh_cfg(tmp_path))
    pairs = [PP(f"Human: {HT}", "Fine.", "Fine!", source="a.jsonl:0"), PP(f"Human: {HT2}", "No thanks.", "Okay.", source="a.jsonl:1"),
             PP(f"Human: {HT2.upper()}", "No.", "Okay.", source="a.jsonl:2")]
    assert b.source == str(tmp_path / "hh_rlhf") and b.cost_pairs["train"] == pairs
    # one prompt per normalised text, at its first place, with the last spelling seen
    assert b.prompts["train"] == [EvalPrompt(f"Human: {HT}"), EvalPrompt(f"Human: {HT2.upper()}")]
    assert [e.prompt for e in b.prompts["train"]] == [f"Human: {HT}", f"Human: {HT2.upper()}"]
    b = hh_rlhf.load(_hh_cfg(tmp_path, train=2))
    assert b.cost_pairs["train"] == _capped(pairs, 2) and b.counts["folds"]["train"] == {"cost_pairs": 2}
    assert _capped(pairs, 2) != pairs[:2]


def test_hh_reads_a_flat_folder_of_jsonl(tmp_path):
    _jsonl(tmp_path / "x.jsonl", [{"chosen": _dialogue(HE, "a"), "rejected": _dialogue(HE, "b")}])
    b = hh_rlhf.load(_hh_cfg(tmp_path))
    assert b.source == str(tmp_path) and b.cost_pairs["eval"] == [PP(f"Human: {HE}", "a", "b", source="x.jsonl:0")]


@pytest.mark.parametrize("rec,problem,field", [
    ({"chosen": "\n\nHuman: hi", "rejected": _dialogue("hi", "b")}, "no final '\\n\\nAssistant:' turn", "chosen"),
    ({"chosen": _dialogue("hi", "a"), "rejected": "\n\nHuman: hi"}, "no final '\\n\\nAssistant:' turn", "chosen"),
    ({"chosen": f"{A} a", "rejected": _dialogue("hi", "b")}, "empty or whitespace-only text (fill it or remove the row)", "chosen"),
    ({"chosen": f" \u200b {A} a", "rejected": _dialogue("hi", "b")},
     "nothing visible (only control, zero-width or bidi characters) (fill it or remove the row)", "chosen"),
    ({"rejected": _dialogue("hi", "b")}, "missing column (every row needs it for this schema)", "chosen"),
    ({"chosen": _dialogue("hi", "a"), "rejected": 7}, "expected str, got int '7' (write a JSON str)", "rejected"),
])
def test_hh_errors_name_file_row_and_field(tmp_path, rec, problem, field):
    path = _jsonl(tmp_path / "hh_rlhf" / "a.jsonl", [{"chosen": _dialogue("ok", "a"), "rejected": _dialogue("ok", "b")}, rec])
    e = _data_error(hh_rlhf.load, _hh_cfg(tmp_path))
    assert str(e) == _msg(problem, str(path), 1, field) and (e.file, e.row, e.field) == (str(path), 1, field)


def test_hh_refuses_a_folder_without_jsonl(tmp_path):
    (tmp_path / "hh_rlhf").mkdir()
    (tmp_path / "hh_rlhf" / "x.json").write_text("[]")
    e = _raises(BenchError, hh_rlhf.load, _hh_cfg(tmp_path))
    assert str(e) == f"no .jsonl(.gz) files under {tmp_path / 'hh_rlhf'}"


def test_hh_load_from_the_hub_reads_train_then_test(monkeypatch):
    calls = []
    splits = {"train": _DS([{"chosen": _dialogue(HT, "no"), "rejected": _dialogue(HT, "yes")}]),
              "test": _DS([{"chosen": _dialogue(HE, "no"), "rejected": _dialogue(HE, "yes")},
                           {"chosen": _dialogue(HE, "no2"), "rejected": _dialogue(HE, "yes2")}])}

    def load_split(hub_id, revision, split, *, name=None, data_dir=None):
        calls.append((hub_id, revision, split, name, data_dir))
        return splits[split]

    monkeypatch.setattr(hub, "load_split", load_split)
    b = hh_rlhf.load(_hh_cfg(None))
    rev = hh_rlhf.HUB_REVISION
    assert calls == [("Anthropic/hh-rlhf", rev, "train", None, "harmless-base"), ("Anthropic/hh-rlhf", rev, "test", None, "harmless-base")]
    assert b.source == f"hub:Anthropic/hh-rlhf@{rev}/harmless-base"
    assert b.cost_pairs["train"] == [PP(f"Human: {HT}", "no", "yes", source="train:0")]
    assert b.cost_pairs["eval"] == [PP(f"Human: {HE}", "no", "yes", source="test:0"), PP(f"Human: {HE}", "no2", "yes2", source="test:1")]
    calls.clear()
    assert hh_rlhf.load(_hh_cfg(None, revision="abc")).source == "hub:Anthropic/hh-rlhf@abc/harmless-base"
    assert [c[1] for c in calls] == ["abc", "abc"]
    # the hub's rows are checked like a file's, naming the split
    splits["test"] = _DS([{"chosen": "no turn", "rejected": _dialogue(HE, "x")}])
    e = _data_error(hh_rlhf.load, _hh_cfg(None))
    assert str(e) == _msg("no final '\\n\\nAssistant:' turn", "hub:Anthropic/hh-rlhf/harmless-base/test", 0, "chosen")


# ---------------------------------------------------------------- TruthfulQA


TQ_COLUMNS = ["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"]


def _tqa_csv(folder: Path, rows, columns=TQ_COLUMNS, bom=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "TruthfulQA.csv"
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        w.writerows(rows)
    return path


def test_split_answers_drops_empty_parts():
    assert truthfulqa._split_answers(" a ; b;; ;c d ;") == ["a", "b", "c d"]
    assert truthfulqa._split_answers("") == []
    assert truthfulqa._split_answers("one") == ["one"]


def test_from_csv_reads_rows_and_matches_mc_targets_by_stripped_question(tmp_path):
    folder = tmp_path / "tq"
    _tqa_csv(folder, [["Adversarial", "Misconceptions", " Is the sky green? ", " No. ", "No; It is blue ;", "Yes;Green", "src"],
                      ["Non-Adversarial", "Law", "Can I drive?", "Yes,\r\nwith a licence", "Yes", "", "src2"],
                      ["Adversarial", "Health", "Third?", "Maybe", "Maybe", "No", "s"]])
    _json(folder / "data" / "mc_task.json", [{"question": "Is the sky green?  ", "mc1_targets": {"No.": 1, "Yes.": 0},
                                              "mc2_targets": {"No.": 1, "It is blue.": 1, "Yes.": 0}},
                                             {"question": "Third?", "mc1_targets": {"Maybe": 1}, "mc2_targets": {}},
                                             {"question": "Not in the CSV?", "mc1_targets": {"x": 1}, "mc2_targets": {"x": 1}}])
    rows = truthfulqa._from_csv(folder)
    assert rows == [
        {"question": "Is the sky green?", "category": "Misconceptions", "type": "Adversarial", "best_answer": "No.",
         "correct_answers": ["No", "It is blue"], "incorrect_answers": ["Yes", "Green"],
         "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
         "mc2_targets": {"choices": ["No.", "It is blue.", "Yes."], "labels": [1, 1, 0]}},
        {"question": "Can I drive?", "category": "Law", "type": "Non-Adversarial", "best_answer": "Yes,\r\nwith a licence",  # quoted CR LF kept
         "correct_answers": ["Yes"], "incorrect_answers": [], "mc1_targets": None, "mc2_targets": None},
        {"question": "Third?", "category": "Health", "type": "Adversarial", "best_answer": "Maybe",
         "correct_answers": ["Maybe"], "incorrect_answers": ["No"], "mc1_targets": {"choices": ["Maybe"], "labels": [1]}, "mc2_targets": None},
    ]
    (folder / "data" / "mc_task.json").unlink()
    assert [(r["mc1_targets"], r["mc2_targets"]) for r in truthfulqa._from_csv(folder)] == [(None, None)] * 3


def test_from_csv_without_a_bom_reads_the_same(tmp_path):
    _tqa_csv(tmp_path, [["T", "C", "Q?", "A", "A", "B", "s"]], bom=False)
    (row,) = truthfulqa._from_csv(tmp_path)
    assert (row["question"], row["type"]) == ("Q?", "T")


def test_from_csv_errors_name_the_file_row_and_field(tmp_path):
    path = tmp_path / "TruthfulQA.csv"
    e = _raises(BenchError, truthfulqa._from_csv, tmp_path)
    assert str(e) == f"{path} not found: point --data-dir at a folder holding truthfulqa/TruthfulQA.csv"
    for missing in ("Type", "Best Answer", "Incorrect Answers"):
        _tqa_csv(tmp_path, [], columns=[c for c in TQ_COLUMNS if c != missing])
        e = _data_error(truthfulqa._from_csv, tmp_path)
        assert str(e) == _msg("missing column", str(path), None, missing,
                              "expected columns Type, Category, Question, Best Answer, Correct Answers, Incorrect Answers")
    _tqa_csv(tmp_path, [], columns=["Type", "Category"])
    assert _data_error(truthfulqa._from_csv, tmp_path).field == "Question"
    path.write_text("")
    assert _data_error(truthfulqa._from_csv, tmp_path).field == "Type"
    _tqa_csv(tmp_path, [["T", "C", "Q?", "A", "A", "B", "s"], ["T", "C", " \u200b ", "A", "A", "B", "s"]])
    e = _data_error(truthfulqa._from_csv, tmp_path)
    assert str(e) == _msg("nothing visible (only control, zero-width or bidi characters)", str(path), 1, "Question", "fill it or remove the row")
    _tqa_csv(tmp_path, [["T", "C", "Q?", "A", "A", "B", "s"], ["T", "C"]])  # a short row: no Question at all
    e = _data_error(truthfulqa._from_csv, tmp_path)
    assert str(e) == _msg("empty or whitespace-only text", str(path), 1, "Question", "fill it or remove the row")


def test_mc_task_is_read_as_utf8_whatever_the_locale(tmp_path):
    import locale

    _tqa_csv(tmp_path, [["T", "C", "Caf\u00e9 ou th\u00e9?", "A", "A", "B", "s"]])
    (tmp_path / "data").mkdir()
    entry = {"question": "Caf\u00e9 ou th\u00e9?", "mc1_targets": {"Th\u00e9": 1, "Caf\u00e9": 0}, "mc2_targets": {"Th\u00e9": 1}}
    (tmp_path / "data" / "mc_task.json").write_bytes(json.dumps([entry], ensure_ascii=False).encode("utf-8"))
    saved = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")  # an ASCII locale: only an explicit UTF-8 read decodes the file
        (row,) = truthfulqa._from_csv(tmp_path)
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)
    assert row["question"] == "Caf\u00e9 ou th\u00e9?"
    assert row["mc1_targets"] == {"choices": ["Th\u00e9", "Caf\u00e9"], "labels": [1, 0]}
    assert row["mc2_targets"] == {"choices": ["Th\u00e9"], "labels": [1]}


def test_mc_task_errors_name_the_file_entry_and_field(tmp_path):
    _tqa_csv(tmp_path, [["T", "C", "Q?", "A", "A", "B", "s"]])
    mc = tmp_path / "data" / "mc_task.json"
    fix = "re-download TruthfulQA's data/mc_task.json"
    mc.parent.mkdir()
    mc.write_text("[{bad")
    try:
        json.loads("[{bad")
    except json.JSONDecodeError as exc:
        why = str(exc)
    assert str(_data_error(truthfulqa._from_csv, tmp_path)) == _msg(f"not valid UTF-8 JSON ({why})", str(mc), fix=fix)
    mc.write_bytes(b'[{"question": "\xff"}]')
    try:
        b'[{"question": "\xff"}]'.decode("utf-8")
    except UnicodeDecodeError as exc:
        why = str(exc)
    assert str(_data_error(truthfulqa._from_csv, tmp_path)) == _msg(f"not valid UTF-8 JSON ({why})", str(mc), fix=fix)
    _json(mc, {"question": "Q?"})
    assert str(_data_error(truthfulqa._from_csv, tmp_path)) == _msg("expected a JSON list of questions", str(mc), fix=fix)
    good = {"question": "Q?", "mc1_targets": {"A": 1}, "mc2_targets": {"A": 1}}
    for bad, problem, field in [("Q?", "expected an object with a 'question' string", "question"),
                                ({"question": 3, "mc1_targets": {}, "mc2_targets": {}}, "expected an object with a 'question' string", "question"),
                                ({"mc1_targets": {}, "mc2_targets": {}}, "expected an object with a 'question' string", "question"),
                                ({"question": "Q?", "mc2_targets": {}}, "expected a {choice: label} mapping", "mc1_targets"),
                                ({"question": "Q?", "mc1_targets": {}, "mc2_targets": ["A"]}, "expected a {choice: label} mapping", "mc2_targets")]:
        _json(mc, [good, bad])
        e = _data_error(truthfulqa._from_csv, tmp_path)
        assert str(e) == _msg(problem, str(mc), 1, field) and (e.file, e.row, e.field) == (str(mc), 1, field)


TQ_TRAIN, TQ_TRAIN2 = (_find("What is true about", 0, 50, k) for k in range(2))
TQ_SCORER = _find("What is true about", 50, 65)
TQ_DUAL, TQ_DUAL2 = (_find("What is true about", 65, 75, k) for k in range(2))
TQ_EVAL = _find("What is true about", 75, 100)


def _tqa_folder(root: Path) -> Path:
    rows = [["Adversarial", "Cat-train", TQ_TRAIN, "Yes.", "Yes; Indeed; Correct", "No; Never", "s"],
            ["Adversarial", "Cat-train2", TQ_TRAIN2, "True.", "True", "False", "s"],
            ["Non-Adversarial", "Cat-scorer", TQ_SCORER, "Ok", "Ok; Fine", "Bad", "s"],
            ["Adversarial", "Cat-dual", TQ_DUAL, "A", "A", "B", "s"],
            ["Adversarial", "Cat-dual2", TQ_DUAL2, "C", "C", "D", "s"],
            ["Adversarial", "Cat-eval", TQ_EVAL, "E", "E; F", "G", "s"]]
    _tqa_csv(root / "truthfulqa", rows)
    return root / "truthfulqa"


def _tq_cfg(data_dir, revision=None, train=0, scorer=0, dual=0):
    return SimpleNamespace(data=SimpleNamespace(data_dir=None if data_dir is None else str(data_dir), revision=revision,
                                                max_train_pairs=train, max_scorer_pairs=scorer, max_dual_prompts=dual))


def test_load_questions_assigns_question_folds_and_returns_copies(tmp_path):
    truthfulqa._load_cached.cache_clear()
    _tqa_folder(tmp_path)
    qs = truthfulqa.load_questions(str(tmp_path))
    assert [(q["question"], q["fold"]) for q in qs] == [(TQ_TRAIN, "train"), (TQ_TRAIN2, "train"), (TQ_SCORER, "scorer"),
                                                         (TQ_DUAL, "dual"), (TQ_DUAL2, "dual"), (TQ_EVAL, "eval")]
    assert qs[0] == {"question": TQ_TRAIN, "category": "Cat-train", "type": "Adversarial", "best_answer": "Yes.",
                     "correct_answers": ["Yes", "Indeed", "Correct"], "incorrect_answers": ["No", "Never"],
                     "mc1_targets": None, "mc2_targets": None, "fold": "train"}
    qs[0]["question"] = "changed"
    assert truthfulqa.load_questions(str(tmp_path))[0]["question"] == TQ_TRAIN
    source, rows = truthfulqa._load_cached(str(tmp_path), "any")
    assert source == str(tmp_path / "truthfulqa") and isinstance(rows, tuple) and len(rows) == 6
    truthfulqa._load_cached.cache_clear()


@pytest.mark.parametrize("lo,hi,fold", [(49, 50, "train"), (50, 51, "scorer"), (64, 65, "scorer"), (65, 66, "dual"), (74, 75, "dual"),
                                        (75, 76, "eval")])
def test_truthfulqa_question_folds_at_their_bounds(tmp_path, lo, hi, fold):
    truthfulqa._load_cached.cache_clear()
    q = _find("Bound question", lo, hi)
    _tqa_csv(tmp_path / "TruthfulQA", [["T", "C", q, "A", "A", "B", "s"]])
    assert [r["fold"] for r in truthfulqa.load_questions(str(tmp_path))] == [fold]
    truthfulqa._load_cached.cache_clear()


def _expected_tq_pairs(q, cat, best, correct, incorrect):
    """The documented construction, computed here: up to 8 (correct, incorrect) cost pairs and up to 7 (best, other
    correct) reward pairs drawn with random.Random(sha1(question)), then (best, "I have no comment.")."""
    rng = random.Random(int(hashlib.sha1(q.encode()).hexdigest(), 16))
    cost = [(c, f) for c in correct for f in incorrect if c != f]
    cost = rng.sample(cost, min(8, len(cost)))
    reward = [(best, c) for c in correct if c not in (best, "I have no comment.") and c.rstrip(".") != best.rstrip(".")]
    reward = rng.sample(reward, min(7, len(reward)))
    if best.rstrip(".") != "I have no comment":
        reward.append((best, "I have no comment."))
    return ([PP(q, w, l, True, True, category=cat, source="truthfulqa") for w, l in reward],
            [PP(q, c, f, True, False, category=cat, source="truthfulqa") for c, f in cost])


def test_pairs_sample_at_most_eight_cost_and_seven_reward_pairs_seeded_by_the_question():
    correct = ["Best.", "Best", "I have no comment.", "Shared"] + [f"Right {i}" for i in range(9)]
    incorrect = ["Shared", "Wrong 1", "Wrong 2"]
    q = {"question": "Which is right?", "category": "Cat", "best_answer": "Best.", "correct_answers": correct, "incorrect_answers": incorrect}
    reward, cost = truthfulqa._pairs(q)
    want_reward, want_cost = _expected_tq_pairs("Which is right?", "Cat", "Best.", correct, incorrect)
    assert (reward, cost) == (want_reward, want_cost)
    assert len(cost) == 8 and len(reward) == 8 and reward[-1] == PP("Which is right?", "Best.", "I have no comment.", True, True, None, None,
                                                                    "Cat", "truthfulqa")
    assert all(p.chosen != p.rejected for p in cost)
    assert {p.rejected for p in reward[:-1]} < {f"Right {i}" for i in range(9)} | {"Shared"}


def test_pairs_of_a_small_question_keep_every_pair():
    q = {"question": "Small?", "category": "C", "best_answer": "Yes", "correct_answers": ["Yes", "Sure", "Yes."], "incorrect_answers": ["No", "Sure"]}
    reward, cost = truthfulqa._pairs(q)
    assert (reward, cost) == _expected_tq_pairs("Small?", "C", "Yes", ["Yes", "Sure", "Yes."], ["No", "Sure"])
    assert sorted((p.chosen, p.rejected) for p in cost) == [("Sure", "No"), ("Yes", "No"), ("Yes", "Sure"), ("Yes.", "No"), ("Yes.", "Sure")]
    assert sorted((p.chosen, p.rejected) for p in reward) == [("Yes", "I have no comment."), ("Yes", "Sure")]
    q = {"question": "Nothing?", "category": "C", "best_answer": "I have no comment", "correct_answers": ["I have no comment."],
         "incorrect_answers": []}
    assert truthfulqa._pairs(q) == ([], [])


def test_pairs_compare_answers_without_only_their_final_dot():
    def pairs(best, correct):
        reward, cost = truthfulqa._pairs({"question": "Where?", "category": "Geo", "best_answer": best, "correct_answers": correct,
                                          "incorrect_answers": []})
        assert cost == []
        return [(p.chosen, p.rejected) for p in reward]

    assert pairs("LA.", ["LA.", "LAX", "LA"]) == [("LA.", "LAX"), ("LA.", "I have no comment.")]  # "LA" is the best answer again
    assert pairs("LAX", ["LAX", "LA."]) == [("LAX", "LA."), ("LAX", "I have no comment.")]
    assert pairs("I have no comment.", ["I have no comment.", "Maybe"]) == [("I have no comment.", "Maybe")]
    assert pairs("I have no comment", ["Maybe"]) == [("I have no comment", "Maybe")]
    # only a final dot is ignored: any other last letter makes a different answer, which is paired with "I have no comment."
    assert pairs("I have no commentX", []) == [("I have no commentX", "I have no comment.")]
    assert pairs(".I have no comment", []) == [(".I have no comment", "I have no comment.")]


def test_truthfulqa_load_builds_question_folds_pairs_prompts_and_counts(tmp_path):
    truthfulqa._load_cached.cache_clear()
    folder = _tqa_folder(tmp_path)
    b = truthfulqa.load(_tq_cfg(tmp_path))
    spec = {TQ_TRAIN: ("Cat-train", "Yes.", ["Yes", "Indeed", "Correct"], ["No", "Never"]), TQ_TRAIN2: ("Cat-train2", "True.", ["True"], ["False"]),
            TQ_SCORER: ("Cat-scorer", "Ok", ["Ok", "Fine"], ["Bad"]), TQ_DUAL: ("Cat-dual", "A", ["A"], ["B"]),
            TQ_DUAL2: ("Cat-dual2", "C", ["C"], ["D"]), TQ_EVAL: ("Cat-eval", "E", ["E", "F"], ["G"])}
    folds = {"train": [TQ_TRAIN, TQ_TRAIN2], "scorer": [TQ_SCORER], "dual": [TQ_DUAL, TQ_DUAL2], "eval": [TQ_EVAL]}
    want = {f: [_expected_tq_pairs(q, *spec[q]) for q in qs] for f, qs in folds.items()}
    assert (b.name, b.source, b.default_cost_scorer) == ("truthfulqa", str(folder), "truthfulness")
    assert b.reward_pairs == {f: [p for r, _ in w for p in r] for f, w in want.items()}
    assert b.cost_pairs == {f: [p for _, c in w for p in c] for f, w in want.items()}
    assert b.prompts == {f: [EvalPrompt(q, spec[q][0]) for q in qs] for f, qs in folds.items()}
    assert [e.meta for e in b.prompts["train"]] == [{"correct": ["Yes", "Indeed", "Correct"], "incorrect": ["No", "Never"], "best": "Yes."},
                                                    {"correct": ["True"], "incorrect": ["False"], "best": "True."}]
    assert b.counts == {"questions": 6, "folds": {
        "train": {"questions": 2, "reward_pairs": 3 + 1, "cost_pairs": 6 + 1}, "scorer": {"questions": 1, "reward_pairs": 2, "cost_pairs": 2},
        "dual": {"questions": 2, "reward_pairs": 2, "cost_pairs": 2}, "eval": {"questions": 1, "reward_pairs": 2, "cost_pairs": 2}}}
    assert b.notes == ["TruthfulQA pairs follow the harness's own construction (docs/evaluation.md §2.6), not a paper's"]
    capped = truthfulqa.load(_tq_cfg(tmp_path, train=2, scorer=1, dual=1))
    assert capped.reward_pairs["train"] == _capped(b.reward_pairs["train"], 2)
    assert capped.cost_pairs["train"] == _capped(b.cost_pairs["train"], 2) != b.cost_pairs["train"][:2]
    assert capped.reward_pairs["scorer"] == _capped(b.reward_pairs["scorer"], 1)
    assert capped.cost_pairs["scorer"] == _capped(b.cost_pairs["scorer"], 1)
    assert capped.reward_pairs["dual"] == b.reward_pairs["dual"] and capped.cost_pairs["eval"] == b.cost_pairs["eval"]
    assert capped.prompts["dual"] == [EvalPrompt(TQ_DUAL, "Cat-dual")] and capped.prompts["train"] == b.prompts["train"]
    assert capped.counts["folds"]["train"] == {"questions": 2, "reward_pairs": 2, "cost_pairs": 2}
    assert capped.counts["folds"]["scorer"] == {"questions": 1, "reward_pairs": 1, "cost_pairs": 1}
    truthfulqa._load_cached.cache_clear()


def test_truthfulqa_from_the_hub(monkeypatch):
    truthfulqa._load_cached.cache_clear()
    gen = _DS([{"question": f" {TQ_EVAL} ", "category": "Cat", "type": "Adversarial", "best_answer": " E ", "correct_answers": ["E", "F"],
                "incorrect_answers": ["G"]},
               {"question": TQ_TRAIN, "category": "Cat2", "type": "Non-Adversarial", "best_answer": "Yes", "correct_answers": ["Yes"],
                "incorrect_answers": ["No"]}])
    mc = _DS([{"question": TQ_EVAL + "  ", "mc1_targets": {"choices": ["E", "G"], "labels": [1, 0]},
               "mc2_targets": {"choices": ["E", "F", "G"], "labels": [1, 1, 0]}}])
    calls = []

    def load_split(hub_id, revision, split, *, name=None, data_dir=None):
        calls.append((hub_id, revision, split, name, data_dir))
        return {"generation": gen, "multiple_choice": mc}[name]

    monkeypatch.setattr(hub, "load_split", load_split)
    qs = truthfulqa.load_questions(None, "rev1")
    assert calls == [("truthfulqa/truthful_qa", "rev1", "validation", "generation", None),
                     ("truthfulqa/truthful_qa", "rev1", "validation", "multiple_choice", None)]
    assert qs == [{"question": TQ_EVAL, "category": "Cat", "type": "Adversarial", "best_answer": "E", "correct_answers": ["E", "F"],
                   "incorrect_answers": ["G"], "mc1_targets": {"choices": ["E", "G"], "labels": [1, 0]},
                   "mc2_targets": {"choices": ["E", "F", "G"], "labels": [1, 1, 0]}, "fold": "eval"},
                  {"question": TQ_TRAIN, "category": "Cat2", "type": "Non-Adversarial", "best_answer": "Yes", "correct_answers": ["Yes"],
                   "incorrect_answers": ["No"], "mc1_targets": None, "mc2_targets": None, "fold": "train"}]
    calls.clear()
    b = truthfulqa.load(_tq_cfg(None))
    assert b.source == f"hub:truthfulqa/truthful_qa@{truthfulqa.HUB_REVISION}" and [c[1] for c in calls] == [truthfulqa.HUB_REVISION] * 2
    calls.clear()
    truthfulqa.load_questions()
    assert calls == []  # the default revision was loaded once already
    assert truthfulqa.load(_tq_cfg(None, revision="rev1")).source == "hub:truthfulqa/truthful_qa@rev1"
    truthfulqa._load_cached.cache_clear()


# ---------------------------------------------------------------- hub: load_split, cached_snapshot, hub_reachable


class _Fakes:
    """`datasets` and `huggingface_hub` replaced in sys.modules by recorders: no download, no network."""

    def __init__(self, monkeypatch, cached=("org/set@rev",), fail=None):
        self.calls, self.snapshots = [], []
        ds = types.ModuleType("datasets")
        hh = types.ModuleType("huggingface_hub")
        hh.constants = SimpleNamespace(HF_HUB_CACHE="/cache/hub", ENDPOINT="https://hub.example")

        def load_dataset(path, name=None, **kw):
            self.calls.append((path, name, kw))
            if fail is not None:
                raise fail
            return ["rows of", path]

        class NotCached(Exception):
            pass

        def snapshot_download(hub_id, **kw):
            self.snapshots.append((hub_id, kw))
            if f"{hub_id}@{kw.get('revision')}" not in cached:
                raise NotCached("no")
            return f"/snap/{hub_id}@{kw['revision']}"

        ds.load_dataset, hh.snapshot_download = load_dataset, snapshot_download
        monkeypatch.setitem(sys.modules, "datasets", ds)
        monkeypatch.setitem(sys.modules, "huggingface_hub", hh)


def test_cached_snapshot_reads_only_the_local_cache(monkeypatch):
    f = _Fakes(monkeypatch)
    assert hub.cached_snapshot("org/set", "rev") == "/snap/org/set@rev"
    assert f.snapshots == [("org/set", {"repo_type": "dataset", "revision": "rev", "local_files_only": True})]
    e = _raises(BenchError, hub.cached_snapshot, "org/set", "other")
    assert str(e) == ("org/set@other is not in the local hub cache /cache/hub and HF_HUB_OFFLINE=1: pass --data-dir / BENCH_DATA_DIR with "
                      "local copies, download that revision once online, or fix --set data.revision (NotCached)")
    assert type(e.__cause__).__name__ == "NotCached"


def test_load_split_offline_reads_the_snapshot_of_the_revision(monkeypatch):
    f = _Fakes(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_reachable", lambda: pytest.fail("no connection is tried offline"))
    assert hub.load_split("org/set", "rev", "train", name="cfg") == ["rows of", "/snap/org/set@rev"]
    assert hub.load_split("org/set", "rev", "test", data_dir="sub") == ["rows of", "/snap/org/set@rev"]
    assert f.calls == [("/snap/org/set@rev", "cfg", {"data_dir": None, "split": "train"}),
                       ("/snap/org/set@rev", None, {"data_dir": "sub", "split": "test"})]
    e = _raises(BenchError, hub.load_split, "org/set", "gone", "train")
    assert str(e).startswith("org/set@gone is not in the local hub cache /cache/hub and HF_HUB_OFFLINE=1")  # not wrapped again


def test_load_split_online_passes_the_revision(monkeypatch):
    f = _Fakes(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    assert hub.load_split("org/set", "rev", "validation", name="generation") == ["rows of", "org/set"]
    assert hub.load_split("org/x", "r2", "train", data_dir="harmless-base") == ["rows of", "org/x"]
    assert f.calls == [("org/set", "generation", {"revision": "rev", "data_dir": None, "split": "validation"}),
                       ("org/x", None, {"revision": "r2", "data_dir": "harmless-base", "split": "train"})]
    assert f.snapshots == []


def test_load_split_with_the_hub_unreachable_falls_back_to_the_cache(monkeypatch):
    f = _Fakes(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    assert hub.load_split("org/set", "rev", "train", name="n", data_dir="d") == ["rows of", "/snap/org/set@rev"]
    assert f.calls == [("/snap/org/set@rev", "n", {"data_dir": "d", "split": "train"})]
    e = _raises(BenchError, hub.load_split, "org/set", "gone", "train")
    assert str(e) == ("the Hugging Face hub (https://hub.example) is unreachable and org/set@gone is not in the local hub cache: "
                      f"{hub.LOCAL_HINT}")
    assert e.__cause__ is None and e.__suppress_context__


@pytest.mark.parametrize("exc,first", [
    (ValueError("\n  Revision 'x' not found\nsecond line"), "Revision 'x' not found"),
    (ConnectionError("E" * 250), "E" * 200),
    (KeyError(), "KeyError"),
    (RuntimeError("  \n "), "RuntimeError"),
])
def test_load_split_turns_any_library_error_into_one_line(monkeypatch, exc, first):
    _Fakes(monkeypatch, fail=exc)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    e = _raises(BenchError, hub.load_split, "org/set", "rev", "train", name="cfg")
    assert str(e) == f"cannot load org/set@rev (cfg/train): {first} (check the network and data.revision, or pass --data-dir)"
    assert e.__cause__ is exc
    e = _raises(BenchError, hub.load_split, "org/set", "rev", "test", data_dir="harmless-base")
    assert str(e).startswith("cannot load org/set@rev (harmless-base/test): ")
    e = _raises(BenchError, hub.load_split, "org/set", "rev", "test", name="n", data_dir="d")
    assert str(e).startswith("cannot load org/set@rev (n/test): ")
    e = _raises(BenchError, hub.load_split, "org/set", "rev", "test")
    assert str(e).startswith("cannot load org/set@rev (test): ")


def test_load_split_offline_wraps_a_library_error_too(monkeypatch):
    _Fakes(monkeypatch, fail=OSError("disk read failed"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = _raises(BenchError, hub.load_split, "org/set", "rev", "train")
    assert str(e) == "cannot load org/set@rev (train): disk read failed (check the network and data.revision, or pass --data-dir)"


def test_hub_reachable_opens_a_connection_to_the_endpoint(monkeypatch):
    _Fakes(monkeypatch)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        hub.hub_reachable.cache_clear()
        f_constants = sys.modules["huggingface_hub"].constants
        f_constants.ENDPOINT = f"http://127.0.0.1:{port}"
        assert hub.hub_reachable(1.0) is True
        hub.hub_reachable.cache_clear()
    finally:
        server.close()
    hub.hub_reachable.cache_clear()
    assert hub.hub_reachable(1.0) is False  # nothing listens there any more
    hub.hub_reachable.cache_clear()
    seen = []

    def connect(address, timeout=None):
        seen.append((address, timeout))
        raise OSError("refused")

    monkeypatch.setattr(socket, "create_connection", connect)
    for endpoint, address in (("https://hub.example", ("hub.example", 443)), ("http://hub.example", ("hub.example", 80)),
                              ("https://hub.example:8443/x", ("hub.example", 8443))):
        f_constants.ENDPOINT = endpoint
        hub.hub_reachable.cache_clear()
        assert hub.hub_reachable() is False
        assert seen[-1] == (address, 3.0)
    hub.hub_reachable.cache_clear()
