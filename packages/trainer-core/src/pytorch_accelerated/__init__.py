"""pytorch_accelerated: the package that trainer-core, trainer-callbacks, trainer-metrics and any
third-party distribution share.

This file (owned by trainer-core) does two things only:

- extends ``__path__`` over every ``pytorch_accelerated`` folder on ``sys.path``, so that the
  subpackages of other distributions are found whether they are installed normally, editable
  (a ``.pth`` path entry, as hatchling writes) or from the hatch workspace;
- re-exports, lazily, the top-level names of pytorch-accelerated 0.1.61, so that
  ``from pytorch_accelerated import Trainer`` works. ``import pytorch_accelerated`` imports
  neither torch nor accelerate: a name is imported when it is first read.
"""

import os as _os
import sys as _sys


def _extend_path(path: list[str], name: str) -> list[str]:
    """``pkgutil.extend_path``, less its ``.pkg`` files: every ``name`` folder on ``sys.path``,
    after ``path``. (pkgutil itself imports typing and re: 15-30 ms, ten times this file.)"""
    extended = list(path)
    for entry in _sys.path:
        folder = _os.path.join(entry or _os.curdir, name)
        if isinstance(entry, str) and folder not in extended and _os.path.isdir(folder):
            extended.append(folder)
    return extended


__path__ = _extend_path(__path__, __name__)

# name -> (module, attribute): read on first access, then cached in this module's namespace
_LAZY_EXPORTS = {
    "Trainer": ("pytorch_accelerated.trainer", "Trainer"),
    "TrainerPlaceholderValues": ("pytorch_accelerated.trainer", "TrainerPlaceholderValues"),
    "notebook_launcher": ("accelerate", "notebook_launcher"),
}

__all__ = list(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import version

        value = version("trainer-core")
    elif name in _LAZY_EXPORTS:
        from importlib import import_module

        module_name, attribute = _LAZY_EXPORTS[name]
        value = getattr(import_module(module_name), attribute)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_EXPORTS, "__version__"})
