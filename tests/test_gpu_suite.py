"""scripts/gpu_suite.sh: the headline suite for a lent GPU. Its dry run executes every step on CPU with the tiny model
(suite -> leaderboard page); its defaults match the README's headline set and the gpu-headline profile carries at
least 10x the cpu profile's training data; on a host without the carried parts it refuses with exit 2."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_suite.sh"


def test_defaults_are_the_readme_headline_set_at_ten_times_the_cpu_data() -> None:
    spec = importlib.util.spec_from_file_location("readme_numbers", REPO / "scripts" / "readme_numbers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (default,) = re.findall(r"^METHODS=\$\{METHODS:-([^}]*)\}", SCRIPT.read_text(), flags=re.M)
    assert tuple(default.split(",")) == mod.HEADLINE
    from harness.config import load_config

    gpu, cpu = load_config("gpu-headline"), load_config("cpu")
    assert gpu.data.max_train_pairs >= 10 * cpu.data.max_train_pairs
    assert (gpu.model, gpu.template, gpu.scoring.judges) == (cpu.model, cpu.template, cpu.scoring.judges)
    assert gpu.device == "cuda"


def test_without_the_carried_parts_it_refuses_with_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "GPUSUITE_ASSETS": str(tmp_path / "nothing-carried")}
    for args, says in (([], "run scripts/gpu_suite.sh --prepare"), (["--receive"], "name one in carry")):
        out = subprocess.run(["bash", str(SCRIPT), *args, "--out", str(tmp_path)], capture_output=True, text=True, env=env)
        assert (out.returncode, says in out.stderr) == (2, True), out.stderr
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr


@pytest.mark.slow
def test_dry_run_writes_the_leaderboard_page_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "METHODS": "sft", "PY": str(REPO / ".venv" / "bin" / "python"), "HF_HUB_OFFLINE": "1"}
    if not Path(env["PY"]).exists():
        env["PY"] = "python3"
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    page = (tmp_path / "leaderboard-gpu.md").read_text()
    assert "| sft |" in page and "tiny-random" in page and "scripts/gpu_suite.sh" in page and "no GPU (CPU dry run)" in page
