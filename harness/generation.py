"""Generation: one `Generator` interface, two real backends (transformers `generate`, vLLM) and a dummy.

`auto` picks vLLM when it imports and a GPU is present, otherwise transformers, and says why. Generations are
cached on disk, keyed by model fingerprint + template + prompts + sampling parameters, so rerunning a finished
evaluation returns at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness.errors import BenchError
from harness.io import discard_damaged, read_cache_json, write_cache_json
from harness.models import cache_dir, format_prompt, load_policy, model_fingerprint
from harness.monitor import note_reuse, phase
from harness.progress import progress_bar
from harness.types import SamplingParams

log = logging.getLogger("bench")


@runtime_checkable
class Generator(Protocol):
    name: str
    fingerprint: str  # model + template identity, for caching

    def generate(self, prompts: list[str], params: SamplingParams) -> list[str]: ...


class HFGenerator:
    """Batched, left-padded transformers `generate`; greedy (temperature 0) or seeded sampling."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any = None, template: str = "chat", batch_size: int = 16, device: str = "cpu", precision: str = "auto"):
        if isinstance(model, (str, Path)):
            self.fingerprint = f"{model_fingerprint(model)}:{template}"
            model, tokenizer = load_policy(model if not isinstance(model, str) or not Path(model).exists() else Path(model), device, precision)
        else:
            self.fingerprint = f"mem{id(model)}:{template}"  # in-memory models are not cached across processes
        self.model, self.tokenizer = model, tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.template, self.batch_size = template, batch_size

    def generate(self, prompts: list[str], params: SamplingParams) -> list[str]:
        import torch

        texts = [format_prompt(self.tokenizer, p, self.template) for p in prompts]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out: list[str] = []
        with progress_bar("generate", total=len(texts)) as bar:
            for i in range(0, len(texts), self.batch_size):
                batch = texts[i : i + self.batch_size]
                enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                kwargs: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
                if params.temperature > 0:
                    # one seed per batch position, derived from the run seed: reproducible and batch-order stable
                    torch.manual_seed(params.seed + i)
                    kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                with torch.no_grad():
                    ids = self.model.generate(**enc, **kwargs)
                new = ids[:, enc["input_ids"].shape[1] :]
                out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
                bar.advance(len(batch))
        if was_training:
            self.model.train()
        return [o.strip() for o in out]

    def close(self) -> None:
        """Drop the model this generator loaded (an in-memory model handed in stays with its owner)."""
        self.model = None
        release_accelerator_memory()


class VLLMGenerator:
    """vLLM offline `LLM.generate` (GPU only). Imported lazily so CPU installs never touch vllm."""

    name = "vllm"

    def __init__(self, model: Any, tokenizer: Any = None, template: str = "chat", batch_size: int = 0, device: str = "cuda", precision: str = "auto", **llm_kwargs: Any):
        if not isinstance(model, (str, Path)):
            raise BenchError("the vllm backend needs a saved model folder, not an in-memory model (save it first or use --set generation.backend=hf)")
        from vllm import LLM  # noqa: PLC0415

        from harness.models import load_tokenizer

        self.fingerprint = f"{model_fingerprint(model)}:{template}"
        self.tokenizer = tokenizer or load_tokenizer(model)
        dtype = {"auto": "auto", "bf16": "bfloat16", "fp32": "float32"}.get(precision, "auto")
        self.llm = LLM(model=str(model), dtype=dtype, **llm_kwargs)
        self.template = template

    def close(self) -> None:
        """Tear the engine down so its GPU memory (weights + KV cache) is free before a scorer loads."""
        self.llm = None
        try:  # vLLM keeps a model-parallel group and a distributed environment per process
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel  # noqa: PLC0415

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as exc:  # noqa: BLE001  (older/newer vLLM layouts: the gc below still frees the engine)
            log.debug("vLLM teardown: %s", exc)
        release_accelerator_memory()

    def generate(self, prompts: list[str], params: SamplingParams) -> list[str]:
        from vllm import SamplingParams as VSP  # noqa: PLC0415

        texts = [format_prompt(self.tokenizer, p, self.template) for p in prompts]
        sp = VSP(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p, seed=params.seed)
        outs = self.llm.generate(texts, sp)
        return [o.outputs[0].text.strip() for o in outs]


class DummyGenerator:
    """Echoes a fixed refusal or a prompt-derived string: for harness tests that need no model."""

    name = "dummy"

    def __init__(self, model: Any = None, tokenizer: Any = None, template: str = "chat", **_: Any):
        self.fingerprint = f"dummy:{model}"

    def generate(self, prompts: list[str], params: SamplingParams) -> list[str]:
        return [f"I cannot help with that. ({len(p)})" for p in prompts]

    def close(self) -> None:
        pass


def release_accelerator_memory() -> None:
    """gc + empty the CUDA cache (no-op on CPU beyond the gc): after a generator or scorer is dropped."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def close_generator(gen: Any) -> None:
    """Free a generator's model now (not when the garbage collector gets to it); plugins without close() are dropped."""
    close = getattr(gen, "close", None)
    if callable(close):
        close()
    else:
        release_accelerator_memory()


def vllm_settings(gen_cfg: Any, device: str = "cuda") -> dict[str, Any]:
    """The vLLM engine arguments from the `generation` config: tensor_parallel_size 0 -> every visible GPU,
    max_model_len 0 -> the model's own maximum (None to vLLM)."""
    tp = int(gen_cfg.tensor_parallel_size)
    if tp < 0:
        raise BenchError(f"generation.tensor_parallel_size={tp}: use 0 (auto: every visible GPU) or a positive count")
    if not 0 < float(gen_cfg.gpu_memory_utilization) <= 1:
        raise BenchError(f"generation.gpu_memory_utilization={gen_cfg.gpu_memory_utilization}: use a fraction in (0, 1]")
    if tp == 0:
        tp = visible_gpus() if device.startswith("cuda") else 1
        tp = max(tp, 1)
    return {"tensor_parallel_size": tp, "gpu_memory_utilization": float(gen_cfg.gpu_memory_utilization),
            "max_model_len": int(gen_cfg.max_model_len) or None, "enforce_eager": bool(gen_cfg.enforce_eager)}


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        return 0


def choose_backend(requested: str, device: str) -> tuple[str, str]:
    """(backend, reason). `auto` prefers vLLM on GPU when installed."""
    import importlib.util

    if requested != "auto":
        if requested == "vllm" and importlib.util.find_spec("vllm") is None:
            raise BenchError("generation backend 'vllm' is not installed: pip install 'safealign-bench[vllm]' (GPU hosts) or --set generation.backend=hf")
        return requested, f"backend '{requested}' requested"
    if importlib.util.find_spec("vllm") is None:
        return "hf", "vLLM not used: the package is not installed (install the 'vllm' extra on a GPU host)"
    if device != "cuda":
        return "hf", "vLLM not used: no GPU visible"
    return "vllm", "vLLM installed and a GPU is present"


def make_generator(model: Any, tokenizer: Any = None, *, backend: str = "auto", template: str = "chat", batch_size: int = 16, device: str = "cpu", precision: str = "auto",
                   vllm: dict[str, Any] | None = None) -> Generator:
    """`vllm`: engine arguments for the vLLM backend (see `vllm_settings`); other backends ignore them."""
    from harness.registries import GENERATORS

    chosen, reason = choose_backend(backend, device)
    if chosen == "vllm" and not isinstance(model, (str, Path)):
        chosen, reason = "hf", "vLLM not used: the model is in memory"
    log.info("generation backend: %s (%s)", chosen, reason)
    cls = GENERATORS.get(chosen)
    extra = dict(vllm or {}) if chosen == "vllm" else {}
    gen = cls(model, tokenizer, template=template, batch_size=batch_size, device=device, precision=precision, **extra)
    gen.backend_reason = reason  # type: ignore[attr-defined]
    return gen


def cached_generate(gen: Generator, prompts: list[str], params: SamplingParams, use_cache: bool = True) -> tuple[list[str], bool]:
    """(responses, hit). Keyed by the model's content fingerprint, prompts and sampling parameters only, so every
    run and method asking for the same generations (PD-DPO's and SACPO's dual steps, SFT baselines) shares one
    entry. Only models with an on-disk fingerprint are cached; an entry with another key or the wrong length is
    discarded and regenerated. A hit is noted in the running stage's record."""
    from dataclasses import asdict

    key = hashlib.sha256(json.dumps([gen.fingerprint, prompts, asdict(params)], sort_keys=True).encode()).hexdigest()
    path = cache_dir() / "generations" / f"{key[:24]}.v2.json"  # v2: entries carry their full key and a checksum
    cacheable = use_cache and not gen.fingerprint.startswith("mem")
    if cacheable:
        entry = read_cache_json(path, key)  # a damaged entry is discarded with a warning and regenerated
        if entry is not None and len(entry["responses"]) == len(prompts):
            note_reuse("generations", n=len(prompts), source=str(path))
            return entry["responses"], True
        if entry is not None:
            discard_damaged(path, f"{len(entry['responses'])} responses for {len(prompts)} prompts")
    with phase("generate", trim=True):
        responses = gen.generate(prompts, params)
    if cacheable:
        write_cache_json(path, key, {"fingerprint": gen.fingerprint, "params": asdict(params), "responses": responses})
    return responses, False
