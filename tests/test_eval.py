"""`bench eval --model PATH --name NAME`: a checkpoint through the run pipeline, recorded and ranked under NAME."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app


def test_eval_records_a_saved_checkpoint_under_its_name(tmp_path, data_dir, tiny_model_path):
    from harness.models import model_fingerprint
    from harness.store import list_runs
    from leaderboards.table import build_leaderboard

    ckpt = tmp_path / "my-checkpoint"
    shutil.copytree(tiny_model_path, ckpt)  # the user's own saved folder (tiny-random's weights and tokenizer)
    runs_dir = tmp_path / "runs"
    out = CliRunner().invoke(app, ["eval", "--model", str(ckpt), "--name", "mymodel", "--profile", "tiny",
                                   "--runs-dir", str(runs_dir), "--data-dir", str(data_dir)])
    assert out.exit_code == 0, out.output
    [row] = list_runs(runs_dir)
    assert (row["method"], row["status"], row["model"]) == ("mymodel", "finished", "tiny-random")  # the profile's SFT policy
    record = row["results"]
    assert record["method"] == "mymodel" and record["run_id"].startswith("mymodel-pku-saferlhf-tiny-s0-")
    extra = record["train"]["extra"]
    assert extra["checkpoint"] == str(ckpt) and extra["checkpoint_fingerprint"] == model_fingerprint(ckpt)
    assert record["stages"]["generate"]["model_fingerprint"] == model_fingerprint(ckpt)  # generated from the checkpoint
    assert record["train"]["models_trained"] == 0 and record["config"]["methods"]["mymodel"] == {"checkpoint": str(ckpt),
                                                                                          "weights": model_fingerprint(ckpt)}
    assert record["results"]["safety"]["win_rate_vs_sft"]  # compared with the profile's SFT policy, as a method is
    assert (runs_dir / record["run_id"] / "results.json").exists()
    board = build_leaderboard(runs_dir)
    assert [r["method"] for r in board.rows] == ["mymodel"]
    assert board.tables[0].model == "tiny-random"  # the table the methods of this profile are in


def test_eval_refuses_a_registered_method_name_in_one_line_exit_2(tmp_path, data_dir, tiny_model_path):
    argv = ["eval", "--model", str(tiny_model_path), "--name", "pddpo", "--profile", "tiny", "--runs-dir", str(tmp_path / "runs"),
            "--data-dir", str(data_dir)]
    out = subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "--name pddpo: that is a registered method" in lines[0], out.stderr
    assert not (tmp_path / "runs").exists()  # refused before any run folder or store


@pytest.mark.parametrize("name,ok", [("mymodel", True), ("My_model-2", True), ("my/model", False), ("my.model", False), ("-x", False),
                                     ("sft", False), ("", False)])
def test_eval_names_are_plain_tokens_and_not_methods(name, ok):
    from harness.checkpoint import check_name
    from harness.errors import BenchError

    if ok:
        check_name(name)
    else:
        with pytest.raises(BenchError, match="--name"):
            check_name(name)


def test_a_checkpoint_whose_tokenizer_is_missing_fails_before_any_work(tmp_path, data_dir, tiny_model_path):
    from harness.config import load_config
    from harness.errors import BenchError
    from harness.runs import preflight

    ckpt = tmp_path / "weights-only"
    shutil.copytree(tiny_model_path, ckpt)
    for f in [*ckpt.glob("tokenizer*"), ckpt / "bench_manifest.json"]:  # a user's folder has no manifest
        f.unlink()
    cfg = load_config("tiny", method="mine", runs_dir=str(tmp_path / "runs"), **{"methods.mine.checkpoint": str(ckpt), "data.data_dir": str(data_dir)})
    with pytest.raises(BenchError, match="tokenizer of checkpoint"):
        preflight(cfg)
    assert not list((tmp_path / "runs").glob("mine-*"))
    cfg.methods["mine"]["checkpoint"] = "no-such-model"
    with pytest.raises(BenchError, match="unknown model 'no-such-model'"):
        preflight(cfg)


def test_changed_weights_in_the_same_folder_are_a_new_evaluation(tmp_path, tiny_model_path):
    """The run id follows the checkpoint's weights, not only its path: re-saving different weights into the same folder
    must not return the cached record of the old ones."""
    from harness.checkpoint import eval_fields
    from harness.config import load_config
    from harness.runs import run_id

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model_path, ckpt)
    before = run_id(load_config("tiny", None, **eval_fields("mine", str(ckpt))))
    assert run_id(load_config("tiny", None, **eval_fields("mine", str(ckpt)))) == before  # same weights: same run
    weights = next(ckpt.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the weights changes
    weights.write_bytes(bytes(data))
    assert run_id(load_config("tiny", None, **eval_fields("mine", str(ckpt)))) != before
