"""Regenerate the README's cpu results table from the leaderboard export (`scripts/cpu_suite.sh` calls this).

    python scripts/readme_results.py docs/leaderboard-cpu.md [--seeds 0,1,2] [--readme README.md]

Everything between the markers `<!-- cpu-results:begin -->` and `<!-- cpu-results:end -->` is replaced by the
leaderboard's markdown (its table, tiers and the notes that say in words which differences are significant),
preceded by one line naming the source file, the seeds and the date. Nothing is typed by hand in between, so the
README can never claim more than the leaderboard does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

BEGIN, END = "<!-- cpu-results:begin -->", "<!-- cpu-results:end -->"


def replace_block(readme: str, body: str) -> str:
    """`readme` with the text between the markers replaced by `body` (markers kept)."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"the README needs exactly one {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{body.rstrip()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("leaderboard", type=Path, help="the leaderboard's markdown export (bench leaderboard --format md)")
    ap.add_argument("--seeds", default="?", help="seeds the suite ran, for the header line")
    ap.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[1] / "README.md")
    a = ap.parse_args(argv)
    if not a.leaderboard.exists():
        print(f"error: {a.leaderboard} does not exist: run scripts/cpu_suite.sh (or bench leaderboard --format md -o ...)",
              file=sys.stderr)
        return 2
    table = a.leaderboard.read_text().strip()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    body = (f"_Generated {when} by `scripts/readme_results.py` from [{a.leaderboard.as_posix()}]({a.leaderboard.as_posix()}) "
            f"(seeds {a.seeds}); do not edit by hand._\n\n{table}")
    try:
        a.readme.write_text(replace_block(a.readme.read_text(), body))
    except ValueError as exc:
        print(f"error: {a.readme}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
