"""`bench ARGV` in-process through the real entry point (`harness.cli.entry`: exit-code mapping, one-line errors),
shared by the tests that check what a user sees on a failure."""

from __future__ import annotations

import sys

import pytest


def entry_code(argv: list[str]) -> int:
    """Run `bench ARGV` as the console script would; its exit code. The caller reads stdout/stderr (capsys)."""
    from harness import cli

    old = sys.argv
    sys.argv = ["bench", *argv]
    try:
        with pytest.raises(SystemExit) as ex:
            cli.entry()
    finally:
        sys.argv = old
        cli._DEBUG = False  # `--debug` is a process-wide switch: never leak it into the next call
    return ex.value.code
