"""The README's main job, run as a user runs it: the `stoffelnet demo` console script, as a subprocess."""

from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.mark.skipif(shutil.which("stoffelnet") is None, reason="the stoffelnet console script is not installed")
def test_stoffelnet_demo_runs_a_checked_multi_process_exchange_over_quic() -> None:
    run = subprocess.run(
        ["stoffelnet", "demo", "--rounds", "20", "--size", "4096"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "quic" in run.stdout
    assert "check                 PASSED" in run.stdout
    assert "messages checked      180" in run.stdout  # 3 parties x 3 senders x 20 rounds
    assert "mpc check             PASSED (sum = 57, product = 740; 2 clients checked)" in run.stdout  # 20 + 37
    for member in ("party0", "party1", "party2", "client0", "client1"):
        assert f"{member} finished: ok" in run.stdout
