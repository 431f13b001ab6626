"""DeepSpeed ZeRO on CPU (issue 26 item 2): the packaged presets, 2 gloo processes with DeepSpeed's CPU accelerator,
against one process with the whole batch, at the tolerance of the DDP check in tests/test_scaleout.py.

The presets train in bf16 on 8 GPUs; here `--num_processes 2 --mixed_precision no` keeps their ZeRO settings and makes
the comparison exact up to fp32 reduction order. ZeRO-3 fails on this CPU (docs/scale-out.md has the error line): its
test is a strict xfail, so it reports when the failure goes away. Skipped where the `[deepspeed]` extra is not
installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed", reason="the [deepspeed] extra is not installed (pip install -e '.[deepspeed]')")
pytest.importorskip("hjson", reason="deepspeed's config parser needs hjson (part of the [deepspeed] extra)")

REPO = Path(__file__).resolve().parent.parent
LOSS_TOL, WEIGHT_TOL, MIN_MOVE = 1e-5, 1e-6, 1e-3  # tests/test_scaleout.py's DDP check
ZERO3_FAILURE = "IndexError: pop from an empty deque"  # partitioned_param_coordinator.record_parameters, first train step


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("preset", ["zero2", pytest.param("zero3", marks=pytest.mark.xfail(
    strict=True, raises=AssertionError, reason=f"ZeRO-3 on 2 CPU processes: {ZERO3_FAILURE} (docs/scale-out.md)"))])
def test_zero_on_two_cpu_processes_equals_one_process(preset: str, tmp_path: Path) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import ddp_dpo_worker
    from harness.models import resolve_model
    from harness.training.dpo import read_train_record

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs" / "accelerate" / f"{preset}.yaml"),
           "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "0",
           str(Path(__file__).parent / "ds_dpo_worker.py"), str(tmp_path / preset), "2"]
    launched = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    single = ddp_dpo_worker.train(tmp_path / "one", 4)  # meanwhile, in this process
    log, _ = launched.communicate(timeout=600)
    if launched.returncode and preset == "zero3" and ZERO3_FAILURE not in log:  # a new failure is an error, not the known xfail
        raise RuntimeError(f"ZeRO-3 failed differently from the recorded failure:\n{log[-3000:]}")
    assert launched.returncode == 0, log[-3000:]
    assert "You are using ZeRO" in log  # DeepSpeed's engine warning (SGD is not on its tested list): ZeRO, not plain DDP, ran

    rank0, rank1 = tmp_path / preset / "rank0", tmp_path / preset / "rank1"
    r_one, r_ds = read_train_record(single), read_train_record(rank0)
    assert r_one["steps"] == r_ds["steps"] == 1 and r_one["pairs"] == r_ds["pairs"] == 4
    assert abs(r_one["train_loss"] - r_ds["train_loss"]) < LOSS_TOL, (r_one["train_loss"], r_ds["train_loss"])
    init, w_one, w0, w1 = _weights(Path(resolve_model("tiny-random"))), _weights(single), _weights(rank0), _weights(rank1)
    assert set(w0) == set(init)  # the saved model is whole (ZeRO shards gathered on save)
    assert max((w_one[k] - init[k]).abs().max().item() for k in init) > MIN_MOVE
    assert max((w_one[k] - w0[k]).abs().max().item() for k in w_one) < WEIGHT_TOL
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
