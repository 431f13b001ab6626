"""Cache integrity: every cache entry carries its key; a damaged one is detected, discarded with one warning and
rebuilt, never used (generations, models, scorer folders, reference log-probs, scores)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from harness.io import MANIFEST, folder_problem, read_cache_json, write_cache_json
from harness.types import SamplingParams


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_json_entry_with_wrong_key_or_damage_is_discarded(tmp_path, caplog):
    path = tmp_path / "e.json"
    write_cache_json(path, "k1", {"x": [1, 2]})
    assert read_cache_json(path, "k1") == {"x": [1, 2]}
    with caplog.at_level(logging.WARNING, logger="bench"):
        assert read_cache_json(path, "k2") is None  # another key's entry is never returned
    assert not path.exists() and "written for key" in caplog.text
    write_cache_json(path, "k1", {"x": [1, 2]})
    path.write_text(path.read_text().replace("[1, 2]", "[1, 3]"))  # same shape, wrong content
    assert read_cache_json(path, "k1") is None and not path.exists()


def test_truncated_generation_entry_is_regenerated(cache, caplog):
    from harness.generation import DummyGenerator, cached_generate

    gen, params = DummyGenerator("m"), SamplingParams(max_new_tokens=4)
    first, hit = cached_generate(gen, ["a", "bb"], params)
    assert not hit and cached_generate(gen, ["a", "bb"], params) == (first, True)
    (entry,) = (cache / "generations").glob("*.json")
    entry.write_text(entry.read_text()[:30])  # a kill or a full disk mid-write outside the atomic path
    with caplog.at_level(logging.WARNING, logger="bench"):
        again, hit = cached_generate(gen, ["a", "bb"], params)
    assert (again, hit) == (first, False) and caplog.text.count("discarding damaged") == 1
    assert cached_generate(gen, ["a", "bb"], params) == (first, True)


def test_damaged_cached_model_is_rebuilt(cache, tiny_model_path, caplog):
    from harness.models import builtin_cache_path, resolve_model

    # the tokenizer source is an input here, not what is attacked: link the shared converted SmolLM2 in
    shared = tiny_model_path.parent
    (cache / "models").mkdir(parents=True)
    smol = next(shared.glob("smollm2-135m-instruct-v*"))
    (cache / "models" / smol.name).symlink_to(smol)
    target = builtin_cache_path("tiny-random")
    shutil.copytree(tiny_model_path, target, ignore=shutil.ignore_patterns(MANIFEST))
    assert resolve_model("tiny-random") == target and (target / MANIFEST).exists()  # adopted: manifest written
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    assert "bytes" in folder_problem(target)
    with caplog.at_level(logging.WARNING, logger="bench"):
        assert resolve_model("tiny-random") == target
    assert "discarding damaged cached model 'tiny-random'" in caplog.text
    assert folder_problem(target) is None
    from harness.models import load_policy

    load_policy(target)  # loads: the rebuilt folder is a real model


def test_scorer_folder_checksum_catches_a_flipped_byte(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "scorer"
    folder.mkdir()
    save_file({"w": torch.arange(64, dtype=torch.float32)}, folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    (folder / "card.json").write_text('{"accuracy": 0.6}')
    assert folder_problem(folder) is None and (folder / MANIFEST).exists()
    (folder / "card.json").write_text('{"accuracy": 0.6, "more": 1}')  # cards gain fields: allowed
    assert folder_problem(folder) is None
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-5] ^= 0xFF  # same size, damaged content
    (folder / "model.safetensors").write_bytes(bytes(raw))
    assert "checksum mismatch" in folder_problem(folder)
    (folder / "card.json").write_text('{"acc')
    assert "card.json" in folder_problem(folder) or "checksum" in folder_problem(folder)


def test_ref_logprob_entry_damaged_or_foreign_is_discarded(tmp_path):
    from harness.training.dpo import _read_ref_entry

    path = tmp_path / "r.v2.pt"
    torch.save({"key": "k", "chosen": torch.tensor([-1.0, -2.0]), "rejected": torch.tensor([-3.0, -4.0])}, path)
    assert _read_ref_entry(path, "k", 2)["chosen"].tolist() == [-1.0, -2.0]
    assert _read_ref_entry(path, "k", 3) is None and not path.exists()  # wrong length: discarded
    torch.save({"key": "other", "chosen": torch.tensor([-1.0]), "rejected": torch.tensor([-3.0])}, path)
    assert _read_ref_entry(path, "k", 1) is None and not path.exists()
    torch.save({"key": "k", "chosen": torch.tensor([-1.0]), "rejected": torch.tensor([-3.0])}, path)
    path.write_bytes(path.read_bytes()[:40])  # truncated
    assert _read_ref_entry(path, "k", 1) is None and not path.exists()


def test_damaged_score_cache_is_set_aside_and_rebuilt(tmp_path, caplog):
    from evaluators.cache import ScoreCache

    path = tmp_path / "scores.sqlite"
    path.write_bytes(b"not sqlite at all " * 200)
    with caplog.at_level(logging.WARNING, logger="bench"):
        c = ScoreCache(path)
    assert "damaged" in caplog.text and list(tmp_path.glob("scores.sqlite.damaged-*"))
    c.put("fp", [("p", "r")], [0.5])
    assert c.get("fp", [("p", "r"), ("p", "x")]) == {0: 0.5}


def test_generation_cache_entries_carry_their_key(cache):
    from harness.generation import DummyGenerator, cached_generate

    cached_generate(DummyGenerator("m"), ["q"], SamplingParams())
    (entry,) = (cache / "generations").glob("*.json")
    body = json.loads(entry.read_text())
    assert len(body["key"]) == 64 and entry.name.startswith(body["key"][:24]) and body["payload"]["responses"]
