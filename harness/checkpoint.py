"""`bench eval`: any checkpoint through the same generate -> score -> metrics stages as `bench run`, under a name.

An evaluation is a run whose method is the user's NAME and whose method section holds the checkpoint:
`methods.<NAME>.checkpoint = PATH_OR_HUB_ID`. Its train stage (`CheckpointEval`) trains nothing and hands the
checkpoint to the other stages, so the judges, eval sets, win rates against the profile's SFT policy (`model`),
the record and the store row are exactly a run's, and the leaderboard lists it as a row named NAME in the table
of that SFT policy. The checkpoint's path and fingerprint are in the record (`train.extra`, and the generate
stage's `model_fingerprint`). The run id hashes the path and the weights' fingerprint (`methods.<NAME>.weights`), so
re-evaluating changed weights in the same folder is a new run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.api import TrainContext, TrainResult
from harness.errors import BenchError

KEY = "checkpoint"  # the method-section field that marks a run as an evaluation
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass
class CheckpointConfig:
    checkpoint: str = field(default="", metadata={"help": "the model evaluated as it is: a local transformers folder, a hub id or a "
                                                          "built-in name (`bench list models`)"})
    weights: str = field(default="", metadata={"help": "[ours] fingerprint of the checkpoint's files (harness.models.model_fingerprint), "
                                                       "set by `bench eval`: part of the run id, so changed weights in the same folder "
                                                       "are a new evaluation, never the cached record of the old ones"})


class CheckpointEval:
    """The train stage of an evaluation: no training; the checkpoint is the policy that is generated from and scored."""

    name: ClassVar[str] = "checkpoint"
    config_class: ClassVar[type] = CheckpointConfig

    def __init__(self, config: CheckpointConfig):
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        from harness.models import model_fingerprint, resolve_model

        path = str(resolve_model(self.config.checkpoint))
        return TrainResult(model_path=path, models_trained=0, networks_held=["policy"],
                           extra={"checkpoint": self.config.checkpoint, "checkpoint_path": path,
                                  "checkpoint_fingerprint": model_fingerprint(path)})


def is_evaluation(cfg: Any) -> bool:
    """A `bench eval` run: its method section names a checkpoint and its method is no registered method."""
    from harness.registries import METHODS

    return KEY in cfg.method_section() and cfg.method not in METHODS


def method_class(cfg: Any) -> type:
    """The class whose `train` is the run's train stage: `CheckpointEval` for an evaluation, else the registered method."""
    from harness.registries import METHODS

    return CheckpointEval if is_evaluation(cfg) else METHODS.get(cfg.method)


def eval_fields(name: str, model: str) -> dict[str, str]:
    """The config fields that make `bench eval --model MODEL --name NAME` a run: method NAME, its checkpoint and the
    checkpoint's weight fingerprint (so the run id follows the weights, not only the path)."""
    from harness.models import model_fingerprint, resolve_model

    try:
        path = str(resolve_model(model))
    except BenchError:
        path = model  # preflight names the problem in one line
    return {"method": name, f"methods.{name}.{KEY}": model, f"methods.{name}.weights": model_fingerprint(path)}


def check_name(name: str) -> None:
    """NAME becomes the record's method, the leaderboard row and part of the run id: a plain token, no registered method."""
    from harness.registries import METHODS

    if not NAME_PATTERN.fullmatch(name):
        raise BenchError(f"--name {name!r}: use letters, digits, '-' and '_' only (it names the run folder and the leaderboard row)")
    if name in METHODS:
        raise BenchError(f"--name {name}: that is a registered method (`bench list methods`); choose another name, e.g. {name}-ckpt")


def check_checkpoint(cfg: Any) -> tuple[str, Any]:
    """Before any work: the checkpoint resolves and a local folder is intact. Returns (its path or hub id, its tokenizer),
    for `runs.preflight` to check that every prompt fits its context window."""
    from pathlib import Path

    from harness.io import folder_problem
    from harness.models import BUILTIN_MODELS, load_tokenizer, resolve_model

    spec = cfg.method_section()[KEY]
    if not spec:
        raise BenchError(f"methods.{cfg.method}.checkpoint is empty: pass --model PATH_OR_HUB_ID")
    path = str(resolve_model(spec))
    if Path(path).is_dir() and spec not in BUILTIN_MODELS:  # the user's own folder: checked, never changed
        problem = folder_problem(path, adopt=False)
        if problem:
            raise BenchError(f"model folder {path} is damaged ({problem}): re-save or re-download it")
    try:
        return path, load_tokenizer(path)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot load the tokenizer of checkpoint '{spec}': {str(exc).splitlines()[0]} "
                         "(save it beside the weights: tokenizer.save_pretrained(PATH))") from None
