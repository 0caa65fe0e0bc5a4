"""The command line every example shares: :func:`example_parser`."""

from __future__ import annotations

import argparse
import textwrap

__all__ = ["example_parser"]

PACKAGE = "pytorch_accelerated.examples"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every argument's default, and the epilog's command on a line of its own, unwrapped."""


def example_parser(name: str, doc: str, small_run: str) -> argparse.ArgumentParser:
    """The argument parser of the example ``name``: its ``python -m`` command, the first paragraph of
    its docstring, every argument's default, and ``small_run``, the arguments of a run of seconds
    (the examples README prints the same command)."""
    return argparse.ArgumentParser(
        prog=f"python -m {PACKAGE}.{name}",
        description=first_paragraph(doc),
        epilog=f"A run of seconds:\n  python -m {PACKAGE}.{name} {small_run}",
        formatter_class=_HelpFormatter,
    )


def first_paragraph(doc: str) -> str:
    """The docstring's first paragraph, wrapped anew: a summary over two lines stays whole."""
    return textwrap.fill(" ".join(doc.strip().split("\n\n")[0].split()), width=100)
