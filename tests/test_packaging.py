"""A regular (non-editable) install works: the wheel carries the profiles and presets, and `bench run --profile tiny`
runs from a fresh venv in a folder outside the repository (so no file of the checkout can be found by accident)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("harness", "methods", "evaluators", "leaderboards", "configs")
BUILD_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


def build_wheel(out: Path) -> Path:
    """The wheel of a copy of the sources (building in place would leave build/ and egg-info in the shared checkout)."""
    src = out / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out / "dist"), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = (out / "dist").glob("safealign_bench-*.whl")
    return wheel


def fresh_venv(where: Path, wheel: Path) -> Path:
    """A new venv that sees this venv's dependencies through a .pth file, with the wheel installed into it (no deps)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=300)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "main_venv_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def test_the_wheel_ships_every_profile_and_preset(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in sorted(REPO.joinpath("configs").rglob("*.yaml")):
        assert f"harness/configs/{f.relative_to(REPO / 'configs').as_posix()}" in names, f


@pytest.mark.slow  # builds a wheel, makes a venv and runs a tiny run: a minute or two on shared cores
def test_bench_run_tiny_from_a_non_editable_install_outside_the_repo(tmp_path, data_dir):
    wheel = build_wheel(tmp_path / "build")
    python = fresh_venv(tmp_path / "venv", wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BENCH_DATA_DIR")}
    where = subprocess.run([str(python), "-c", "import harness.config as c; print(c.__file__); print(c.CONFIG_DIR)"],
                           capture_output=True, text=True, cwd=outside, env=env, timeout=120)
    module, config_dir = where.stdout.split()
    assert module.startswith(str(tmp_path / "venv")) and config_dir.startswith(str(tmp_path / "venv")), where.stdout
    out = subprocess.run([str(tmp_path / "venv" / "bin" / "bench"), "run", "--profile", "tiny", "--runs-dir", "runs", "--data-dir", str(data_dir)],
                         capture_output=True, text=True, cwd=outside, env=env, timeout=900)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    assert list(outside.glob("runs/sft-pku-saferlhf-tiny-s0-*/results.json")), out.stdout
