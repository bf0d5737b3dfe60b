"""A bounded run of the coverage-guided fuzz target (tests/fuzz/fuzz_wire.py), so CI proves it runs and finds
nothing in a few thousand inputs. Longer campaigns are run by hand (the command is in the target's docstring)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).with_name("fuzz_wire.py")


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_fuzz_target_smoke(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(TARGET), "-runs=3000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 3000 runs" in run.stderr
