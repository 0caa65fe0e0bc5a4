"""The command line every example shares: :func:`example_parser`."""

from __future__ import annotations

import argparse

__all__ = ["example_parser"]

PACKAGE = "pytorch_accelerated.examples"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every argument's default, and the epilog's command on a line of its own, unwrapped."""


def example_parser(name: str, doc: str, small_run: str) -> argparse.ArgumentParser:
    """The argument parser of the example ``name``: its ``python -m`` command, the first line of its
    docstring, every argument's default, and ``small_run``, the arguments of a run of seconds
    (the examples README prints the same command)."""
    return argparse.ArgumentParser(
        prog=f"python -m {PACKAGE}.{name}",
        description=doc.splitlines()[0],
        epilog=f"A run of seconds:\n  python -m {PACKAGE}.{name} {small_run}",
        formatter_class=_HelpFormatter,
    )
