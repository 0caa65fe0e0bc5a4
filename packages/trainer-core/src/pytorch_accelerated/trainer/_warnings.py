"""Warnings that point at the user's line: the first caller outside trainer-core."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

_CORE_FOLDER = os.path.dirname(os.path.abspath(__file__))
_SKIPPED_FILES = (contextlib.__file__,)  # the trainer's own context managers run in contextlib's frames


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message)`` attributed to the innermost frame outside this package (Python 3.12's
    ``skip_file_prefixes``, which 3.10 and 3.11 lack)."""
    frame, stacklevel = sys._getframe(1), 1
    while frame is not None and _is_internal(frame.f_code.co_filename):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def _is_internal(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) == _CORE_FOLDER or filename in _SKIPPED_FILES
