"""One DPO step of the tiny model through `harness.training.dpo.train_dpo`, for tests/test_scaleout.py's data-parallel check.

Run as `accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2 tests/ddp_dpo_worker.py OUT 2`
(two gloo processes, per-device batch 2) or imported and called with world size 1 and batch 4. Plain SGD, so the
update is a linear function of the gradient and the comparison tolerance is a statement about gradients.
"""

from __future__ import annotations

import sys
from pathlib import Path

N_PAIRS = 4  # one global batch: the pairs every configuration sees in its single optimiser step
LR = 0.5  # large, so the weight change (~lr x grad) dwarfs the tolerance the test allows


def pairs(cfg):
    from harness.datasets import load_bundle

    return load_bundle(cfg).cost_pairs["train"][:N_PAIRS]


def config(batch_size: int, runs_dir: str):
    from harness.config import load_config

    return load_config("tiny", [f"train.batch_size={batch_size}", "train.max_steps=1", f"train.learning_rate={LR}",
                                "train.lr_scheduler=constant"], method="dpo-harmless", runs_dir=runs_dir)


def train(out: Path, batch_size: int, rank: int = 0) -> Path:
    import harness.training.dpo as dpo
    from harness.models import resolve_model
    from transformers.training_args import OptimizerNames

    plain = dpo.dpo_config

    def sgd_config(*args, **kwargs):  # AdamW's first step is ~lr*sign(g): SGD keeps the check about gradients
        a = plain(*args, **kwargs)
        a.optim = OptimizerNames.SGD
        return a

    dpo.dpo_config = sgd_config
    cfg = config(batch_size, str(out / "runs"))
    return dpo.train_dpo(pairs(cfg), init=resolve_model("tiny-random"), ref=None, beta=0.1, out_dir=out / f"rank{rank}",
                         cfg=cfg, device="cpu", ref_cache_dir=out / f"refcache{rank}", resume=False)


if __name__ == "__main__":
    import os

    train(Path(sys.argv[1]), int(sys.argv[2]), int(os.environ.get("RANK", 0)))
