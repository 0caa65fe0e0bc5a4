"""Optional dependencies ("extras"), imported only by the callbacks that need them."""

from __future__ import annotations

import importlib
from types import ModuleType


def require_extra(module_name: str, extra: str, needed_by: str | None = None) -> ModuleType:
    """Import ``module_name``, or raise an ImportError naming the extra that installs it.

    Example: ``require_extra("tensorboard", "tensorboard", "TensorBoardLoggerCallback")`` raises
    "TensorBoardLoggerCallback needs tensorboard: pip install 'trainer-callbacks[tensorboard]'".
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"{needed_by or 'This feature'} needs {module_name}: pip install 'trainer-callbacks[{extra}]'"
        ) from error
