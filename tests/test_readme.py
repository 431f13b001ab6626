"""The README is a front door whose numbers cannot drift: at most 150 lines, every number it shows is generated from a
file in docs/ by scripts/readme_numbers.py (checked here by regenerating), and the prose outside the generated
blocks carries no typed number. The headline table shows equal ranks inside a tier and a banner when nothing
separates the methods."""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mod():
    spec = importlib.util.spec_from_file_location("readme_numbers", REPO / "scripts" / "readme_numbers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_is_short_and_its_generated_blocks_match_docs() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for name in ("headline", "judges", "cost"):
        assert text.count(f"<!-- {name}:begin -->") == 1
    assert _mod().main(["--check"]) == 0, "run: python scripts/readme_numbers.py"


# Digits that are names, not measurements: model and encoder names, a paper id, the DeepSpeed stages, MC1/MC2.
NAMES = re.compile(r"SmolLM2-135M(-Instruct)?|arXiv \d{4}\.\d{5}|MiniLM-L6-v2|ZeRO-[23]|MC[12]|\b7B\b|bf16|fp32")


def test_prose_outside_the_generated_blocks_has_no_typed_numbers() -> None:
    text = (REPO / "README.md").read_text()
    text = re.sub(r"<!-- (\w+):begin -->.*?<!-- \1:end -->", "", text, flags=re.S)  # generated
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # commands
    text = re.sub(r"`[^`]*`", "", text)  # code spans: ids, paths, flags
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = NAMES.sub("", text)
    assert re.findall(r".{0,30}\d.{0,30}", text) == []


def _write(path: Path, rows: list[dict]) -> Path:
    cols = list(rows[0])
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def _row(method: str, rank: int, tier: int, unsafe: float, p_holm: float = 1.0, diff: float = 0.0) -> dict:
    return {"dataset": "pku-saferlhf", "model": "m", "profile": "cpu", "rank": rank, "method": method, "tier": tier,
            "n_seeds": 3, "n_prompts": 166, "reward_mean": 0.3, "reward_mean_ci_low": 0.2, "reward_mean_ci_high": 0.4,
            "unsafe_rate": unsafe, "unsafe_rate_ci_low": unsafe - 0.05, "unsafe_rate_ci_high": unsafe + 0.05,
            "unsafe_rate_corrected": "", "unsafe_rg_clipped": "False", "refusal_rate": 0.0, "refusal_rate_ci_low": 0.0,
            "refusal_rate_ci_high": 0.0, "vs_sft_unsafe_rate_diff": diff, "vs_sft_unsafe_rate_p_holm": p_holm}


def test_headline_equal_ranks_banner_and_significance_in_words(tmp_path: Path) -> None:
    mod = _mod()
    assert mod.equal_ranks([1, 1, 2, 3, 3]) == ["1=", "1=", "3", "4=", "4="]
    one_tier = _write(tmp_path / "a.csv", [_row("pddpo", 1, 1, 0.15), _row("sft", 2, 1, 0.22)])
    text = mod.headline(one_tier, ("sft", "pddpo"))
    assert "No method can be told apart" in text
    # inside one tier the fixed order is kept (sft first), never the point estimates' order, and ranks are equal
    assert text.index("| 1= | `sft`") < text.index("| 1= | `pddpo`")
    assert "**none**" in text
    two_tiers = _write(tmp_path / "b.csv", [_row("pddpo", 1, 1, 0.10, p_holm=0.01, diff=-0.12), _row("sft", 2, 2, 0.22)])
    text = mod.headline(two_tiers, ("sft", "pddpo"))
    assert "No method can be told apart" not in text
    assert "| 1 | `pddpo` | 1 |" in text and "| 2 | `sft` | 2 |" in text
    assert "`pddpo` unsafe rate −12 points (Holm p = 0.01)" in text


@pytest.mark.parametrize("p_holm", [0.05, 0.2])
def test_headline_never_calls_a_difference_at_or_above_alpha_significant(tmp_path: Path, p_holm: float) -> None:
    mod = _mod()
    path = _write(tmp_path / "c.csv", [_row("pddpo", 1, 1, 0.10, p_holm=p_holm, diff=-0.12), _row("sft", 2, 1, 0.22)])
    assert "**none**" in mod.headline(path, ("sft", "pddpo"))
