"""Run configuration: YAML profiles in `configs/` plus `--set key=value` overrides, type-checked.

A profile is a YAML mapping whose keys mirror `RunConfig` below. Overrides use dotted keys
(`train.learning_rate=1e-5`, `methods.pddpo.num_iterations=2`; `method.X` is shorthand for the active
method's section). Unknown keys and values of the wrong type are refused with a `BenchError` naming the
key and the accepted type. Every run writes its resolved config next to its artifacts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import BenchError, ConfigValueError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PROFILES = ("tiny", "cpu", "gpu")


@dataclass
class DataConfig:
    """Where data comes from and how much of it a run uses."""

    data_dir: str | None = None  # local copies instead of the hub; default $BENCH_DATA_DIR
    revision: str | None = None  # hub revision; None = the dataset's pinned default
    subset: str = "default"  # PKU-SafeRLHF config: default | alpaca-7b | alpaca2-7b | alpaca3-8b
    eval_set: str = "auto"  # auto (the dataset's own test prompts) | pku-test | redteam-83 | beavertails
    max_train_pairs: int = 0  # per pair kind (reward, cost); 0 = all
    max_scorer_pairs: int = 0  # pairs for the harness's own score models; 0 = all
    max_dual_prompts: int = 64  # PD-DPO / C-DPO dual-estimate prompts (held out)
    max_eval_prompts: int = 100  # final evaluation prompts; 0 = all


@dataclass
class TrainConfig:
    """Optimiser and sequence settings shared by every training method (one stated regime for all)."""

    learning_rate: float = 5e-6
    epochs: float = 1.0
    max_steps: int = -1  # > 0 caps optimiser steps (tests)
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 384  # prompt + response tokens
    max_prompt_length: int = 128
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    beta: float = 0.1  # KL coefficient of the DPO family
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    gradient_checkpointing: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32


@dataclass
class GenerationConfig:
    """Decoding for evaluation and for methods' own sampling (dual steps, online pairs)."""

    backend: str = "auto"  # auto | hf | vllm | dummy
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    batch_size: int = 16
    cache: bool = True
    # vLLM engine settings (ignored by the hf backend); each is recorded in results.json -> generation.vllm
    tensor_parallel_size: int = 1  # GPUs per vLLM engine; 0 = auto (every visible GPU)
    gpu_memory_utilization: float = 0.9  # fraction of each GPU's memory vLLM may take
    max_model_len: int = 0  # prompt + response context vLLM reserves KV cache for; 0 = the model's own maximum
    enforce_eager: bool = False  # true = no CUDA graphs (slower decoding, less memory, faster start)


@dataclass
class ScoringConfig:
    """Evaluation scorers and the constraint the leaderboard checks."""

    reward: str = "minilm-reward"
    cost: str = "auto"  # auto = the dataset's default cost annotator (minilm-cost; truthfulness on TruthfulQA)
    batch_size: int = 32
    threshold: float = 0.2  # b: the constraint E[cost] <= b or unsafe rate <= b
    threshold_units: str = "unsafe_rate"  # unsafe_rate | mean_cost
    bootstrap: int = 1000
    win_rate_vs_sft: bool = True


@dataclass
class EvalConfig:
    """Extra evaluations beyond reward/cost scoring."""

    truthfulqa_mc: bool = True
    mc_max_questions: int = 0  # 0 = all available (817, or the test fold when training on TruthfulQA)
    mc_batch_size: int = 16


@dataclass
class ResourcesConfig:
    """What one run asks a scheduler for (`bench suite --executor ray`); not part of the run id."""

    cpus: float = 1.0  # CPU cores per run (Ray also sets OMP_NUM_THREADS to this)
    gpus: float = 0.0  # GPUs per run
    memory_gb: float = 0.0  # RAM per run, for Ray's scheduler; 0 = no request


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "safealign-bench"
    entity: str | None = None


@dataclass
class RunConfig:
    """One run = (method, dataset, model, profile/config, seed)."""

    method: str = "sft"
    dataset: str = "pku-saferlhf"
    model: str = "smollm2-135m-instruct"
    template: str = "chat"  # chat (the model's own template) | beaver
    seed: int = 0
    profile: str = "cpu"
    device: str = "auto"  # auto | cpu | cuda
    runs_dir: str = "runs"
    suite: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method config sections

    def method_section(self, name: str | None = None) -> dict[str, Any]:
        return dict(self.methods.get(name or self.method, {}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, exclude: tuple[str, ...] = ("runs_dir", "suite", "resources")) -> str:
        """Stable hash of everything that changes results (not where they are stored)."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        d["methods"] = {self.method: d["methods"].get(self.method, {})}
        d["wandb"] = None
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


# -- typed coercion -----------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type, or raise a BenchError naming key and type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except BenchError as exc:
                errors.append(exc)
        raise BenchError(f"config key '{key}': {value!r} is not a {' or '.join(_type_name(a) for a in args)}")
    if origin in (dict, list, tuple):
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        want = {dict: dict, list: (list, tuple), tuple: (list, tuple)}[origin]
        if not isinstance(value, want):
            raise BenchError(f"config key '{key}': {value!r} is not a {origin.__name__}")
        if origin is dict:
            return dict(value)
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [coerce(v, item_tp, f"{key}[]") if item_tp is not Any else v for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise BenchError(f"config key '{key}': {value!r} is not a bool (use true or false)")
    if tp is int:
        if isinstance(value, bool):
            raise BenchError(f"config key '{key}': {value!r} is not an int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise BenchError(f"config key '{key}': {value!r} is not an int")
    if tp is float:
        if isinstance(value, bool):
            raise BenchError(f"config key '{key}': {value!r} is not a float")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise BenchError(f"config key '{key}': {value!r} is not a float")
    if tp is str:
        if isinstance(value, (dict, list)):
            raise BenchError(f"config key '{key}': {value!r} is not a string")
        return str(value)
    return value


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate a (possibly nested) config dataclass from a mapping, refusing unknown keys."""
    if not isinstance(values, dict):
        raise BenchError(f"config section '{prefix.rstrip('.') or cls.__name__}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            close = [n for n in fields if n.startswith(key[:3])]
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise BenchError(f"unknown config key '{prefix}{key}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            base = dataclasses.asdict(fields[key].default_factory()) if fields[key].default_factory is not dataclasses.MISSING else {}  # type: ignore[misc]
            if value is not None and not isinstance(value, dict):
                raise BenchError(f"config section '{prefix}{key}' must be a mapping, got {value!r}")
            base.update(value or {})
            kwargs[key] = build_dataclass(tp, base, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce(value, tp, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ConfigValueError as exc:  # a config's own __post_init__ check, named with its full dotted key
        raise BenchError(f"config key '{prefix}{exc.field}': {exc.problem} (--set {prefix}{exc.field}=...)") from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BenchError(f"config key '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in pairs:
        if "=" not in item:
            raise BenchError(f"--set {item!r}: expected key=value, e.g. --set train.learning_rate=1e-5")
        key, _, raw = item.partition("=")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def profile_path(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = CONFIG_DIR / f"{profile}.yaml"
    if not path.exists():
        raise BenchError(f"unknown profile '{profile}': choose one of {', '.join(PROFILES)} or pass a YAML file path")
    return path


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set key=value` items to a raw config tree in place (`method.X` = the active method's section)."""
    method = tree.get("method", RunConfig.method)
    for key, value in parse_overrides(overrides):
        if key.startswith("method."):
            key = f"methods.{method}.{key[len('method.'):]}"
        if key.startswith("methods."):
            parts = key.split(".")
            if len(parts) != 3:
                raise BenchError(f"--set {key}: method keys look like methods.<method>.<field> or method.<field>")
        _set_dotted(tree, key, value)
    return tree


def load_config(profile: str = "cpu", overrides: list[str] | None = None, **fields: Any) -> RunConfig:
    """Profile YAML <- explicit CLI fields (method, dataset, ...) <- --set overrides."""
    raw = yaml.safe_load(profile_path(profile).read_text()) or {}
    raw["profile"] = raw.get("profile", Path(profile).stem)
    tree = _deep_merge({}, raw)
    for key, value in fields.items():
        if value is not None:
            _set_dotted(tree, key, value)
    apply_overrides(tree, overrides or [])
    if tree.get("data", {}).get("data_dir") is None and os.environ.get("BENCH_DATA_DIR"):
        tree.setdefault("data", {})["data_dir"] = os.environ["BENCH_DATA_DIR"]
    return validate_config(build_dataclass(RunConfig, tree))


# -- value ranges ----------------------------------------------------------------------------------
# Checked when a config is built (profile, --set, a saved config.yaml): a value outside its range would otherwise be
# read silently (a negative cap acting as a Python slice, bootstrap=0 reporting a CI that excludes the value) or crash
# inside torch after work has been done. (key, test, what is accepted)
_POS, _NONNEG = (lambda v: v > 0), (lambda v: v >= 0)
RANGES: tuple[tuple[str, Any, str], ...] = (
    ("seed", _NONNEG, "an int >= 0"),
    ("data.max_train_pairs", _NONNEG, "an int >= 0 (0 = all)"),
    ("data.max_scorer_pairs", _NONNEG, "an int >= 0 (0 = all)"),
    ("data.max_dual_prompts", _NONNEG, "an int >= 0 (0 = all)"),
    ("data.max_eval_prompts", _NONNEG, "an int >= 0 (0 = all)"),
    ("train.learning_rate", _POS, "a float > 0"),
    ("train.epochs", _POS, "a float > 0"),
    ("train.max_steps", lambda v: v == -1 or v > 0, "-1 (no cap) or an int > 0"),
    ("train.batch_size", _POS, "an int > 0"),
    ("train.grad_accum", _POS, "an int > 0"),
    ("train.max_length", _POS, "an int > 0"),
    ("train.max_prompt_length", _POS, "an int > 0"),
    ("train.warmup_ratio", lambda v: 0 <= v < 1, "a float in [0, 1)"),
    ("train.weight_decay", _NONNEG, "a float >= 0"),
    ("train.beta", _POS, "a float > 0"),
    ("train.lora_r", _POS, "an int > 0"),
    ("train.lora_alpha", _POS, "an int > 0"),
    ("train.precision", lambda v: v in ("auto", "fp32", "bf16", "fp16"), "auto, fp32, bf16 or fp16"),
    ("generation.backend", lambda v: v in ("auto", "hf", "vllm", "dummy"), "auto, hf, vllm or dummy"),
    ("generation.max_new_tokens", _POS, "an int > 0"),
    ("generation.temperature", _NONNEG, "a float >= 0 (0 = greedy)"),
    ("generation.top_p", lambda v: 0 < v <= 1, "a float in (0, 1]"),
    ("generation.batch_size", _POS, "an int > 0"),
    ("scoring.batch_size", _POS, "an int > 0"),
    ("scoring.bootstrap", lambda v: v >= 100, "an int >= 100 (fewer resamples give CIs that can exclude the value)"),
    ("scoring.threshold_units", lambda v: v in ("unsafe_rate", "mean_cost"), "unsafe_rate or mean_cost"),
    ("eval.mc_max_questions", _NONNEG, "an int >= 0 (0 = all)"),
    ("eval.mc_batch_size", _POS, "an int > 0"),
    ("wandb.mode", lambda v: v in ("offline", "online", "disabled"), "offline, online or disabled"),
    ("device", lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    ("template", lambda v: v in ("chat", "beaver"), "chat or beaver"),
)


def validate_config(cfg: RunConfig) -> RunConfig:
    """Refuse values outside `RANGES` and inconsistent combinations, naming the key and what it accepts."""
    for key, ok, accepted in RANGES:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if not ok(node):
            raise BenchError(f"config key '{key}': {node!r} is out of range; use {accepted} (--set {key}=...)")
    if cfg.train.max_prompt_length >= cfg.train.max_length:
        raise BenchError(f"config key 'train.max_prompt_length': {cfg.train.max_prompt_length} leaves no room for a response in "
                         f"train.max_length={cfg.train.max_length}; make it smaller than train.max_length")
    return cfg


def method_config(cls: type, cfg: RunConfig, name: str | None = None) -> Any:
    """Build a method's config dataclass from its section of the run config (validated)."""
    return build_dataclass(cls, cfg.method_section(name), prefix=f"methods.{name or cfg.method}.")


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    return validate_config(build_dataclass(RunConfig, d))


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
