"""A third-party transport, installed as a real distribution with an entry point, passes the conformance suite.

Nothing here patches stoffelnet: the distribution is found by importlib.metadata on PYTHONPATH, listed by the
`stoffelnet` command, selected by name, and tested with exactly the command the README gives transport authors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent / "thirdparty_src" / "stoffelnet_unix"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs Unix sockets")


def _install(root: Path) -> dict[str, str]:
    shutil.copytree(SOURCE, root / "stoffelnet_unix")
    dist = root / "stoffelnet_unix-0.3.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: stoffelnet-unix\nVersion: 0.3.0\n")
    (dist / "entry_points.txt").write_text("[stoffelnet.transports]\nunix = stoffelnet_unix\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_third_party_transport_is_listed_and_passes_the_conformance_suite(tmp_path: Path) -> None:
    env = _install(tmp_path / "site")
    listed = subprocess.run(
        [sys.executable, "-m", "stoffelnet_core.cli", "transports"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.split() and line.split()[0] == "unix")
    assert "stoffelnet-unix" in line
    assert "0.3.0" in line
    assert "ok" in line

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "stoffelnet_core.testing.conformance",
            "--stoffelnet-transport=unix",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
    assert "failed" not in run.stdout
