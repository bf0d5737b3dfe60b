"""The optional compiled core: stoffelnet-core's hot-path modules compiled by mypyc from the same source.

It is opt-in (``HATCH_BUILD_HOOK_ENABLE_MYPYC=true`` when building the wheel; see docs/PERFORMANCE.md), so the
development install never runs it: this test builds the wheel the way a user would, from a copy of the source (the
build compiles in place), installs it into a folder of its own, and runs the core's unit tests and the
conformance suite on every transport against it in a child process.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPILED = ("codec", "flow", "frames", "inbox", "mux", "peer", "resume", "session")  # stoffelnet_core/pyproject.toml

pytestmark = pytest.mark.skipif(
    shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc") is None
    or importlib.util.find_spec("hatch_mypyc") is None,
    reason="the compiled core needs a C compiler and hatch-mypyc (part of the workspace install)",
)


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(args[:4])} ... failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.timeout(900)
def test_the_compiled_core_builds_and_passes_the_core_tests_and_the_conformance_suite(tmp_path: Path) -> None:
    source = tmp_path / "stoffelnet_core"
    shutil.copytree(
        ROOT / "stoffelnet_core",
        source,
        ignore=shutil.ignore_patterns("__pycache__", "*.so", ".mypy_cache", "build", "dist"),
    )
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    env = {**os.environ, "HATCH_BUILD_HOOK_ENABLE_MYPYC": "true", "PIP_NO_INDEX": "1"}
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], env, tmp_path, 600)
    [wheel] = wheels.glob("stoffelnet_core-*.whl")
    _run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], env, tmp_path, 120)

    child = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    child["PYTHONPATH"] = os.pathsep.join([str(target), child.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    where = _run(
        [
            sys.executable,
            "-c",
            "import importlib\n"
            f"for name in {COMPILED!r}:\n"
            "    print(importlib.import_module('stoffelnet_core.' + name).__file__)",
        ],
        child,
        tmp_path,
        60,
    ).split()
    assert len(where) == len(COMPILED)
    assert all(path.startswith(str(target)) and path.endswith(".so") for path in where), where

    out = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit", "tests/conformance"],
        child,
        ROOT,
        600,
    )
    assert " passed" in out, out[-2000:]
    assert " failed" not in out, out[-2000:]
