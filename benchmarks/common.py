"""Shared set-up for the benchmark scripts: the cpu profile's policy, real pairs padded to a chosen length, the
harness's and TRL's trainers on the same batch, interleaved timing, and one JSON result line per script.

Every script prints human-readable lines and, last, `RESULT {json}`; `benchmarks/run_all.py` collects those.
Timings alternate A, B, A, B ... so a load spike on this shared machine hits both sides; ratios are medians.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("BENCH_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

MODEL = "smollm2-135m-instruct"


def cfg_for(seq_len: int = 192, batch: int = 4, profile: str = "cpu", extra: Sequence[str] = ()) -> Any:
    from harness.config import load_config

    return load_config(profile, [f"train.max_length={seq_len}", f"train.batch_size={batch}", "train.max_prompt_length=32", *extra],
                       method="dpo-helpful")


def long_pairs(n: int, tokenizer: Any, seq_len: int) -> list[Any]:
    """`n` real PKU-SafeRLHF cost pairs whose responses are repeated until prompt + response exceeds `seq_len`
    tokens, so truncation makes every sequence exactly `seq_len` long (controlled lengths for timing)."""
    from harness.datasets import load_bundle
    from harness.types import PreferencePair

    bundle = load_bundle(cfg_for())
    src = [p for p in bundle.cost_pairs.get("train", []) if p.chosen.strip() and p.rejected.strip() and p.chosen != p.rejected]
    out = []
    for p in src[:n]:
        reps = 1 + seq_len // max(1, len(tokenizer(p.rejected)["input_ids"]))
        reps_c = 1 + seq_len // max(1, len(tokenizer(p.chosen)["input_ids"]))
        out.append(PreferencePair(prompt=p.prompt, chosen=" ".join([p.chosen] * reps_c), rejected=" ".join([p.rejected] * reps)))
    return out


def policy_path() -> Path:
    from harness.models import resolve_model

    return Path(resolve_model(MODEL))


def load_model(path: Path | None = None) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path or policy_path()), dtype=torch.float32)


def harness_trainer(cfg: Any, pairs: Sequence[Any], beta: float = 0.1, margins: Sequence[float] | None = None,
                    ref_model: Any = None, seed: int = 0) -> Any:
    """`harness.training.dpo.dpo_trainer`, the object `train_dpo` trains with (reference log-probs precomputed)."""
    from transformers import set_seed

    from harness.training.dpo import dpo_trainer, preference_dataset
    from harness.models import load_tokenizer

    tok = load_tokenizer(policy_path())
    set_seed(seed)
    model = load_model()
    ds = preference_dataset(pairs, tok, cfg, margins)
    return dpo_trainer(model, ref_model, ds, tok, cfg, beta, Path(tempfile.mkdtemp()), "cpu", Path(tempfile.mkdtemp()))


def trl_trainer(cfg: Any, pairs: Sequence[Any], beta: float = 0.1, ref_model: Any = None, precompute: bool = True, seed: int = 0) -> Any:
    """A stock TRL `DPOTrainer` with the same config, data, LoRA and model (no harness subclass, no cache)."""
    from peft import LoraConfig
    from transformers import set_seed
    from trl import DPOTrainer

    from harness.training.dpo import dpo_config, preference_dataset
    from harness.models import load_tokenizer

    tok = load_tokenizer(policy_path())
    set_seed(seed)
    model = load_model()
    args = dpo_config(cfg, beta, Path(tempfile.mkdtemp()), "cpu")
    args.precompute_ref_log_probs = precompute
    t = cfg.train
    peft = LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM") if t.lora else None
    return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=preference_dataset(pairs, tok, cfg),
                      processing_class=tok, peft_config=peft)


def first_batch(trainer: Any) -> dict[str, Any]:
    return next(iter(trainer.get_train_dataloader()))


def step_fn(trainer: Any, batch: dict[str, Any]) -> Callable[[], float]:
    """One forward + backward of `trainer` on `batch` (what differs between trainers; the optimiser step is the
    same AdamW on the same LoRA parameters), gradients cleared after. Returns the loss."""

    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step reads it

    def step() -> float:
        loss = trainer.training_step(trainer.model, dict(batch))
        trainer.model.zero_grad(set_to_none=True)
        return float(loss)

    return step


def interleaved(fns: dict[str, Callable[[], Any]], steps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call for each function, called in turn (A, B, A, B, ...) after `warmup` untimed rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + steps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def ratio_of_medians(times: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(times[num]) / statistics.median(times[den])


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median of the per-round ratios: each round's two calls ran back to back, under the same machine load."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def step_args(doc: str | None, steps: int) -> Any:
    """The DPO-step benchmarks' shared command line (P1, P2, P4): `--steps`, `--seq-len`, `--batch` (pairs per step)."""
    import argparse

    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    ap.add_argument("--steps", type=int, default=steps, help="timed steps per side")
    ap.add_argument("--seq-len", type=int, default=192, help="tokens per sequence (the cpu profile's max_length)")
    ap.add_argument("--batch", type=int, default=4, help="pairs per step (the cpu profile's batch_size)")
    return ap.parse_args()


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def result(name: str, **fields: Any) -> None:
    print("RESULT " + json.dumps({"bench": name, **fields}, default=float), flush=True)
