"""Loading a helper module that sits next to a test, by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_module"]


def load_module(name: str, path: Path) -> ModuleType:
    """Import the file ``path`` as module ``name`` once, and return it.

    ``--import-mode=importlib`` keeps test folders off ``sys.path``, so a conftest cannot
    ``import`` a helper module beside it; this loads it by path and registers it in
    ``sys.modules`` under ``name`` (a later call, or ``import name``, gets the same module).
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
