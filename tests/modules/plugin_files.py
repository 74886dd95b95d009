"""Load the repository's Ansible plugins by file path (they are files, not an installed package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_plugin(kind: str, name: str) -> ModuleType:
    """``plugins/<kind>/<name>.py`` as a module named ``rayops_<kind>_<name>`` (modules and action
    plugins share names, so the name says which one)."""
    path = REPO / "plugins" / kind / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"rayops_{kind}_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
