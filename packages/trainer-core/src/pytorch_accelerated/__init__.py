"""pytorch_accelerated: the package that trainer-core, trainer-callbacks, trainer-metrics and any
third-party distribution share.

This file (owned by trainer-core) does two things only:

- extends ``__path__`` over every ``pytorch_accelerated`` folder on ``sys.path``, so that the
  subpackages of other distributions are found whether they are installed normally, editable
  (a ``.pth`` path entry, as hatchling writes) or from the hatch workspace;
- re-exports, lazily, the top-level names of pytorch-accelerated 0.1.61, so that
  ``from pytorch_accelerated import Trainer`` works, and its modules as attributes
  (``pytorch_accelerated.callbacks`` after ``import pytorch_accelerated``, as 0.1.61's import
  loaded them). ``import pytorch_accelerated`` imports neither torch nor accelerate: a name is
  imported when it is first read.
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

# name -> (module, its attribute or None for the module itself, the distribution that installs the module):
# read on first access, then cached in this module's namespace
_LAZY_EXPORTS = {
    "Trainer": ("pytorch_accelerated.trainer", "Trainer", "trainer-core"),
    "TrainerPlaceholderValues": ("pytorch_accelerated.trainer", "TrainerPlaceholderValues", "trainer-core"),
    "notebook_launcher": ("accelerate", "notebook_launcher", "accelerate"),
    "trainer": ("pytorch_accelerated.trainer", None, "trainer-core"),
    "tracking": ("pytorch_accelerated.tracking", None, "trainer-core"),
    "run_config": ("pytorch_accelerated.run_config", None, "trainer-core"),
    "utils": ("pytorch_accelerated.utils", None, "trainer-core"),
    "callbacks": ("pytorch_accelerated.callbacks", None, "trainer-callbacks"),
}

__all__ = [name for name, (_, attribute, _) in _LAZY_EXPORTS.items() if attribute is not None]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import version

        value = version("trainer-core")
    elif name in _LAZY_EXPORTS:
        from importlib import import_module

        module_name, attribute, distribution = _LAZY_EXPORTS[name]
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            message = f"{module_name} is not installed: pip install {distribution}"
            raise AttributeError(message, name=name) from None
        value = module if attribute is None else getattr(module, attribute)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_EXPORTS, "__version__"})
