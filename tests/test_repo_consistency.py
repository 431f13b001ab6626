"""The README, the docs and the scripts agree with the code and with each other (review of issues 10 and 11):
links resolve inside the repo, the README's judge table carries the measured numbers of docs/judges_cpu.md, and
scripts/cpu_suite.sh runs every built-in method."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Backticked .md paths that are not files of the repo on purpose: the device machine's notes, a placeholder folder.
OUTSIDE = {".library/device/KINDS.md", "DIR/gpu-check.md"}


def _markdown_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / f for f in out.split() if (REPO / f).exists()]


def test_every_link_and_md_path_in_the_docs_resolves_inside_the_repo() -> None:
    """A `[text](path)` link, or a backticked `folder/file.md`, must name a file of the repo (relative to the page or
    to the repo root): the session's notes (e.g. notes/JUDGES.md) are not part of it."""
    files = _markdown_files()
    assert REPO / "README.md" in files and REPO / "docs" / "judges.md" in files
    missing = []
    for f in files:
        text = f.read_text()
        links = [m.group(1) for m in re.finditer(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if not re.match(r"[a-z]+:", m.group(1))]
        paths = [m.group(1) for m in re.finditer(r"`([\w./-]+/[\w.-]+\.md)`", text) if m.group(1) not in OUTSIDE]
        missing += [f"{f.relative_to(REPO)}: {p}" for p in links + paths
                    if not ((f.parent / p).exists() or (REPO / p).exists())]
    assert missing == []


def _table(text: str, header_start: str) -> list[list[str]]:
    """The markdown table whose header line starts with `header_start`: header, then the body rows (no separator)."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]  # bold marks a baseline that wins
        rows.append(["–" if c == "-" else c for c in cells])
    return [rows[0]] + rows[2:]


def test_readme_judge_table_carries_the_measured_numbers_with_the_same_baselines() -> None:
    """Every row of the README's judge table equals its docs/judges_cpu.md row (the `bench judge eval --json` table) in
    n, accuracy [CI], the length / random / majority / TF-IDF LR baselines and ECE: nothing typed from memory, and the
    README has the random column the docs have."""
    head, *rows = _table((REPO / "README.md").read_text(), "| judge | held-out source |")
    dhead, *drows = _table((REPO / "docs" / "judges_cpu.md").read_text(), "| judge | held-out source (labels) |")
    shared = {"n", "accuracy [95% CI]", "length", "random", "majority", "TF-IDF LR", "ECE"}
    assert shared <= set(head) and shared <= set(dhead)
    norm = lambda s: re.sub(r"[^a-z0-9]", "", s.lower())  # noqa: E731
    docs = {(r[0], r[1].split(" (")[0]): r for r in drows}
    assert len(rows) >= 7
    for r in rows:
        # the README names a source in words ("PKU eval fold (sign)"); its docs key is the longest one it starts with
        keys = [k for k in docs if k[0] == r[0] and norm(r[1]).startswith(norm(k[1]))]
        assert keys, r
        d = docs[max(keys, key=lambda k: len(k[1]))]
        assert {c: r[head.index(c)] for c in shared} == {c: d[dhead.index(c)] for c in shared}, r[:2]


def test_cpu_suite_script_runs_every_built_in_method() -> None:
    """scripts/cpu_suite.sh types its METHODS default by hand: it must be exactly the registry's built-in methods
    (`bench list methods`, kind built-in), once each, so a new built-in method cannot silently miss the suite."""
    from harness.registries import METHODS

    text = (REPO / "scripts" / "cpu_suite.sh").read_text()
    (default,) = re.findall(r'^METHODS="\$\{METHODS:-([^}]*)\}"', text, flags=re.M)
    listed = default.split(",")
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(n for n in METHODS.names() if METHODS.is_builtin(n))
