"""One KTO run from labelled responses: `train_kto(examples, init=, beta=, ...) -> out_dir` (SACPO's KTO safety stage).

A thin wrapper over TRL 1.16's `KTOTrainer` that mirrors `harness.training.dpo.train_dpo`:

- **Data.** KTO learns from unpaired responses, each labelled desirable or undesirable. `kto_examples` derives them
  from preference pairs that carry per-response safety labels (the cost pairs of PKU-SafeRLHF: `chosen_safe`,
  `rejected_safe`): desirable ⇔ the response is labelled safe, as upstream SACPO's `src/util.py` does
  (desirable ⇔ `is_response_k_safe`; docs/methods.md §4.2). A response without a label is left out, never guessed.
- **Weights.** `w_D = 1`, `w_U = n_desirable / n_undesirable` [code `src/train/safety_kto.py`]: the two classes then
  weigh the same in the loss whatever their counts (`kto_weights`).
- **Reference.** The init checkpoint, always (SACPO's KTO step references the step-1 model it starts from). Its
  log-probs (and the KL completions') are precomputed once (`precompute_ref_log_probs=True`), as in `train_dpo`.
- **Regime.** The run's shared `train` section, through `harness.training.dpo.dpo_config_kwargs` (one stated regime for every
  method; TRL's KTO defaults of bf16 and gradient checkpointing are overridden by it), plus KTO's class weights.
- **Store.** The finished model is published to the content-addressed store under kind `kto` (harness/training/artifacts.py)
  with a key over init weights, the exact labelled examples, β, the weights, the regime and the seed, so any other
  run or method needing the same KTO training materialises it instead of training again.
- **LM head.** Log-probs go through the chunked head (`bench_kto_trainer`, `train.chunked_logps`), as in `train_dpo`.
- **Learning check.** Given the `pairs` the examples came from, a run's held-out check (`harness.training.learning`) is
  recorded as for a DPO stage: KTO's implicit reward is also β·log π/π_ref, so the trained model is scored by its
  pairwise implicit-reward accuracy and margin on held-out pairs of the same view (our choice: KTO's paper reports
  no such check). A reused training records the check from its saved record.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.errors import BenchError

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.types import PreferencePair

KTO_VERSION = "kto-v1"  # part of the store key: bump when the wrapper changes what a key trains


@dataclass(frozen=True)
class LabelledResponse:
    """One KTO example: `completion` to `prompt`, `desirable` = labelled safe by the source."""

    prompt: str
    completion: str
    desirable: bool
    source: str = ""


def kto_examples(pairs: Sequence["PreferencePair"]) -> list[LabelledResponse]:
    """Both responses of every pair, labelled by their own safety label (desirable ⇔ safe); unlabelled responses and
    exact repeats (same prompt, response and label) are dropped. Order: pair order, chosen before rejected."""
    seen: set[tuple[str, str, bool]] = set()
    out: list[LabelledResponse] = []
    for p in pairs:
        for response, safe in ((p.chosen, p.chosen_safe), (p.rejected, p.rejected_safe)):
            if safe is None or not response.strip():
                continue
            key = (p.prompt, response, bool(safe))
            if key not in seen:
                seen.add(key)
                out.append(LabelledResponse(p.prompt, response, bool(safe), p.source))
    return out


def kto_weights(examples: Sequence[LabelledResponse], desirable_weight: float | None = None,
                undesirable_weight: float | None = None) -> tuple[float, float]:
    """(w_D, w_U): given values win; defaults w_D = 1 and w_U = n_D / n_U (upstream SACPO). Both classes must occur."""
    n_d = sum(e.desirable for e in examples)
    n_u = len(examples) - n_d
    if n_d == 0 or n_u == 0:
        raise BenchError(f"KTO needs both desirable (safe) and undesirable (unsafe) responses, but the labelled responses are "
                         f"{n_d} safe and {n_u} unsafe: use pairs with safety labels on both sides (data.max_train_pairs)")
    w_d = 1.0 if desirable_weight is None else float(desirable_weight)
    w_u = n_d / n_u if undesirable_weight is None else float(undesirable_weight)
    if not (w_d > 0 and w_u > 0):
        raise BenchError(f"KTO weights must be > 0 (got desirable {w_d}, undesirable {w_u})")
    return w_d, w_u


def kto_dataset(examples: Sequence[LabelledResponse], tokenizer: Any, cfg: "RunConfig"):
    """A `datasets.Dataset` in TRL's unpaired format: prompt (formatted, cut like DPO's), completion, label."""
    from datasets import Dataset

    from harness.models import prompt_text

    return Dataset.from_dict({"prompt": [prompt_text(tokenizer, e.prompt, cfg) for e in examples],
                              "completion": [e.completion for e in examples],
                              "label": [e.desirable for e in examples]})


def kto_key(examples: Sequence[LabelledResponse], init_id: str | None, beta: float, weights: tuple[float, float],
            cfg: "RunConfig") -> str | None:
    """The content address of a KTO training (never the run or method name); None for an in-memory init."""
    if init_id is None:
        return None
    blob = json.dumps([[(e.prompt, e.completion, e.desirable) for e in examples], init_id, beta, list(weights),
                       asdict(cfg.train), cfg.seed, cfg.template, KTO_VERSION], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@lru_cache(maxsize=1)
def bench_kto_trainer() -> type:
    """TRL's `KTOTrainer` scoring through the chunked LM head (`harness.training.logprobs.ChunkedHeadMixin`: policy,
    reference and KL-completion log-probs, no full-vocabulary logits); built on first use, as TRL is imported lazily."""
    from trl import KTOTrainer

    from harness.training.logprobs import ChunkedHeadMixin

    return type("BenchKTOTrainer", (ChunkedHeadMixin, KTOTrainer), {"__doc__": bench_kto_trainer.__doc__})


def train_kto(examples: Sequence[LabelledResponse], *, init: str | Path, beta: float, out_dir: Path, cfg: "RunConfig",
              device: str, run_name: str = "kto", desirable_weight: float | None = None,
              undesirable_weight: float | None = None, resume: bool = True,
              pairs: Sequence["PreferencePair"] | None = None) -> Path:
    """KTO from the saved model `init` against itself as the frozen reference, saved to `out_dir` (see module doc).

    `pairs` are the pairs the examples came from: inside a run they find the run's held-out learning check
    (`harness.training.learning`), the same pairwise implicit-reward accuracy a DPO stage records, since KTO's implicit
    reward is also β·log π/π_ref."""
    from trl import KTOConfig

    from harness.training.dpo import dpo_config_kwargs, heldout_check_hook, heldout_check_reused, lora_config, reuse_training, save_trained
    from harness.training.learning import active_probe
    from harness.training.losses import LOGP_CHUNK_TOKENS
    from harness.models import load_causal_lm, load_tokenizer, model_fingerprint, release_memory
    from harness.monitor import phase

    if not beta > 0:
        raise BenchError(f"train_kto: beta must be > 0 (got {beta})")
    if cfg.train.batch_size < 2:
        raise BenchError("KTO estimates its KL term from the other responses of a batch, so it needs train.batch_size >= 2 "
                         f"(got {cfg.train.batch_size}): --set train.batch_size=2")
    w_d, w_u = kto_weights(examples, desirable_weight, undesirable_weight)
    out_dir = Path(out_dir)
    init_id = model_fingerprint(init)
    key = kto_key(examples, init_id, beta, (w_d, w_u), cfg)
    probe = active_probe(pairs) if pairs else None  # held-out learning check; None outside a run
    if resume and key:
        reused = reuse_training(key, out_dir, run_name, kind="kto")
        if reused is not None:
            if probe is not None:
                heldout_check_reused(probe, reused, init, init_id, beta, run_name, device)
            return reused

    from transformers import set_seed

    set_seed(cfg.seed)
    start = time.time()
    with phase(f"{run_name}/load", trim=True):
        tokenizer = load_tokenizer(init)
        model = load_causal_lm(init, device)
        dataset = kto_dataset(examples, tokenizer, cfg)
        if probe is not None:  # the reference (the untouched init) on the held-out pairs, before training moves it
            probe.reference(model, tokenizer, device, init_id)
    scratch = out_dir.with_name(f".{out_dir.name}.trainer{os.getpid()}")
    with phase(f"{run_name}/trainer_init+ref_logps", trim=True):
        args = KTOConfig(**dpo_config_kwargs(cfg, beta, scratch, device), desirable_weight=w_d, undesirable_weight=w_u)
        trainer = bench_kto_trainer()(model=model, ref_model=None, args=args, train_dataset=dataset, processing_class=tokenizer,
                                      peft_config=lora_config(cfg), chunked_logps=LOGP_CHUNK_TOKENS if cfg.train.chunked_logps else None)
    with phase(f"{run_name}/train_steps", trim=True):
        output = trainer.train()
    with phase(f"{run_name}/merge+save", trim=True):
        n_d = sum(e.desirable for e in examples)
        record = {
            "key": key, "run_name": run_name, "loss": "kto", "beta": beta, "examples": len(examples), "desirable": n_d,
            "undesirable": len(examples) - n_d, "desirable_weight": w_d, "undesirable_weight": w_u,
            "labels": "desirable = response labelled safe by the source (never inferred)", "init": str(init), "reference": "init",
            "train_loss": output.training_loss, "steps": output.global_step,
            "seconds": round(time.time() - start, 2), "log_history": trainer.state.log_history[-50:], "reused_from": None,
        }
        save_trained(trainer, tokenizer, cfg, out_dir, record, "kto", scratch,
                     before_save=heldout_check_hook(probe, tokenizer, device, beta, run_name))
        del trainer, model
        release_memory()
    return out_dir
