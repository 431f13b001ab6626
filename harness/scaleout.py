"""Checks of the accelerate / DeepSpeed presets (`configs/accelerate/`) against a run's config, without a GPU.

`deepspeed_trainer_config(preset, cfg)` reads the preset with accelerate's own parser, builds the DeepSpeed config
accelerate's `DeepSpeedPlugin` would hand the trainer, and fills its "auto" fields from the `DPOConfig` arguments
`harness.training.dpo` would pass (micro batch, gradient accumulation, global batch, bf16), as transformers'
`HfTrainerDeepSpeedConfig.trainer_config_process` does at train time. Any disagreement is a BenchError naming
the field, raised before `accelerate launch` starts hours of work. What it cannot check without GPUs and the
`deepspeed` package: that DeepSpeed's engine starts, shards (ZeRO-2/3) and saves (README, "Scale-out").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.config import CONFIG_DIR
from harness.errors import BenchError

ACCELERATE_DIR = CONFIG_DIR / "accelerate"


def preset_path(name: str) -> Path:
    path = ACCELERATE_DIR / f"{name}.yaml"
    path = path if path.exists() else Path(name)
    if not path.exists():
        raise BenchError(f"accelerate config '{name}' not found: use ddp, zero2, zero3 or a YAML path")
    if not path.is_file():
        raise BenchError(f"--accelerate-config {name} is a folder, not a YAML file: use ddp, zero2, zero3 or a YAML path")
    return path


def load_preset(path: str | Path) -> Any:
    """The preset as accelerate's `ClusterConfig` (accelerate's own YAML parser and validation)."""
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        return load_config_from_file(str(path))
    except Exception as exc:  # noqa: BLE001  (accelerate raises ValueError/TypeError on a bad file)
        raise BenchError(f"accelerate config {path}: {exc}") from None


def deepspeed_trainer_config(preset: str | Path, cfg: Any, output_dir: str | Path = "runs/.ds-check",
                             beta: float = 0.1) -> tuple[dict[str, Any], Any]:
    """(DeepSpeed config with every "auto" resolved, the DPOConfig arguments) for `cfg` trained under `preset`."""
    from types import SimpleNamespace

    from accelerate.utils import DeepSpeedPlugin

    from harness.training.dpo import dpo_config_kwargs

    cluster = load_preset(preset)
    if str(cluster.distributed_type) not in ("DEEPSPEED", "DistributedType.DEEPSPEED"):
        raise BenchError(f"{preset} is not a DeepSpeed preset (distributed_type: {cluster.distributed_type})")
    dsc = dict(cluster.deepspeed_config or {})
    plugin = DeepSpeedPlugin(
        zero_stage=int(dsc.get("zero_stage", 2)), gradient_accumulation_steps=dsc.get("gradient_accumulation_steps", "auto"),
        offload_optimizer_device=dsc.get("offload_optimizer_device", "none"), offload_param_device=dsc.get("offload_param_device", "none"),
        zero3_init_flag=bool(dsc.get("zero3_init_flag", False)), zero3_save_16bit_model=bool(dsc.get("zero3_save_16bit_model", False)),
    )
    mixed = str(cluster.mixed_precision).split(".")[-1].lower()
    plugin.set_mixed_precision(mixed)
    ds = plugin.deepspeed_config
    kw = dpo_config_kwargs(cfg, beta, Path(output_dir), "cuda")
    world = int(cluster.num_processes) * int(cluster.num_machines or 1)
    want = {"train_micro_batch_size_per_gpu": kw["per_device_train_batch_size"],
            "gradient_accumulation_steps": kw["gradient_accumulation_steps"],
            "train_batch_size": world * kw["per_device_train_batch_size"] * kw["gradient_accumulation_steps"]}
    for key, value in want.items():  # trainer_config_process: fill "auto", refuse a mismatch
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif ds[key] != value:
            raise BenchError(f"{preset}: DeepSpeed {key}={ds[key]} but the run trains with {value}; "
                             f"set it to auto in the preset or change train.batch_size / train.grad_accum")
    preset_bf16 = str(ds.get("bf16", {}).get("enabled", False)).lower() == "true"
    if preset_bf16 != bool(kw["bf16"]):
        raise BenchError(f"{preset}: the preset's mixed precision is {mixed} (bf16 {'on' if preset_bf16 else 'off'}) but the run's "
                         f"train.precision={cfg.train.precision} trains with bf16 {'on' if kw['bf16'] else 'off'}; "
                         "use train.precision=bf16 (or auto) on GPUs, or a preset with mixed_precision: 'no'")
    if str(ds.get("fp16", {}).get("enabled", False)).lower() == "true":
        raise BenchError(f"{preset}: fp16 is not supported by the harness (bf16 or fp32)")
    return ds, SimpleNamespace(**kw)


def check_preset(path: str | Path, cfg: Any) -> None:
    """Before `accelerate launch`: parse the preset; for DeepSpeed presets, check it against the run config."""
    cluster = load_preset(path)
    if "DEEPSPEED" in str(cluster.distributed_type):
        deepspeed_trainer_config(path, cfg)
