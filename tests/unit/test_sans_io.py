"""The sans-IO rule: the protocol core imports no asyncio, socket or ssl.

The package's `__init__` pulls in the network layer (and so asyncio), so an ordinary import cannot show this. Two
checks instead: a fresh interpreter imports the sans-IO modules under a bare package object that skips `__init__`,
and a static pass over each module's source finds no such import anywhere in it (function bodies included).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SANS_IO = ["codec", "errors", "flow", "frames", "identity", "ids", "inbox", "mpc", "mux", "proof", "resume", "session"]
FORBIDDEN = {"asyncio", "socket", "ssl", "selectors"}

_PROBE = """
import importlib, importlib.util, json, sys, types
spec = importlib.util.find_spec("stoffelnet_core")
package = types.ModuleType("stoffelnet_core")
package.__path__ = list(spec.submodule_search_locations)  # a bare package: its __init__ never runs
sys.modules["stoffelnet_core"] = package
for name in sys.argv[1:]:
    importlib.import_module("stoffelnet_core." + name)
print(json.dumps(sorted(sys.modules)))
"""


def package_dir() -> Path:
    spec = importlib.util.find_spec("stoffelnet_core")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    return Path(next(iter(spec.submodule_search_locations)))


def test_importing_the_sans_io_modules_loads_no_io_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *SANS_IO], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    for name in SANS_IO:
        assert f"stoffelnet_core.{name}" in loaded
    assert not loaded & FORBIDDEN, f"sans-IO modules pulled in {sorted(loaded & FORBIDDEN)}"


def test_the_probe_would_notice_an_io_import() -> None:
    """Guard against a probe that can never fail: the full package does load asyncio."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys, stoffelnet_core; print('asyncio' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "True"


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import in `tree` (``import a.b`` and ``from a.b import c`` give ``a``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def relative_imports(tree: ast.AST) -> set[str]:
    """Sibling modules imported relatively (``from . import a`` or ``from .a import b``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("name", SANS_IO)
def test_no_io_import_in_the_source(name: str) -> None:
    tree = ast.parse((package_dir() / f"{name}.py").read_text(encoding="utf-8"))
    assert not imported_modules(tree) & FORBIDDEN
    assert "__import__" not in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "import_module" not in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def test_sans_io_modules_import_siblings_that_are_free_of_io_too() -> None:
    """Everything a sans-IO module imports from the package is sans-IO itself (or the plain `transport` types)."""
    allowed = {*SANS_IO, "transport"}
    for name in [*SANS_IO, "transport"]:
        tree = ast.parse((package_dir() / f"{name}.py").read_text(encoding="utf-8"))
        assert not imported_modules(tree) & FORBIDDEN, name
        assert relative_imports(tree) <= allowed, (name, relative_imports(tree) - allowed)
