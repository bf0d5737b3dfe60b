"""`stoffelnet demo` when things go wrong: a party crashes mid-run, or the user presses Ctrl-C.

A crash is simulated with `run_processes(kill_after=(member, k))`: SIGKILL once party 0 reported k rounds, i.e.
mid-run, decided by the run's own progress and not by a sleep. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import signal
import sys

import pytest

from stoffelnet_core import cli, demo
from stoffelnet_core.demo import DemoResult, report, run_processes

TIMEOUT = 90.0


@pytest.mark.parametrize("transport", ["tcp-tls", "quic"])
async def test_a_party_killed_mid_run_is_named_and_the_others_say_so(transport: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        result = await run_processes(
            rounds=200_000, size=64, transport=transport, kill_after=("party1", 1), timeout=TIMEOUT
        )
    assert not result.ok
    assert result.failed_members == ("party1",)
    assert "party1: killed by SIGKILL (simulated crash) before reporting a result" in result.failures
    assert result.mpc_check.startswith("PASSED")  # the computation was over before the crash
    said = {other: [f for f in result.failures if f.startswith(f"{other}: ")] for other in ("party0", "party2")}
    assert all(len(lines) == 1 for lines in said.values()), result.failures
    # Each survivor lost its connection to party 1, or was stopped while still waiting for it (a transport that has
    # not noticed the crash yet), or (a race) first saw the other survivor give up and close: then the other one
    # names party 1. At least one always names it.
    naming = [
        o
        for o, [line] in said.items()
        if re.search(r"party 1 lost|lost the connection to party 1|waiting for party1", line)
    ]
    assert naming, result.failures
    for other, [line] in said.items():
        if other not in naming:
            survivor = "party ?2" if other == "party0" else "party ?0"
            assert re.search(survivor, line), result.failures
    if transport == "tcp-tls":  # the kernel resets the crashed party's connections: noticed at once
        assert not any("stopped by the demo" in f for f in result.failures), result.failures


def test_the_demo_command_exits_1_and_prints_the_failed_party(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "run_processes", functools.partial(run_processes, kill_after=("party2", 1)))
    code = cli.main(["demo", "--rounds", "200000", "--size", "64", "--transport", "tcp-tls"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert re.search(r"^  failed member +party2$", out, re.MULTILINE), out
    assert "party2 finished: FAILED (exit -9)" in out
    # whichever survivor noticed first lost its connection to party 2 (the other may see that one close first)
    assert re.search(r"! party([01]): party \1: ConnectionLost: connection to party 2 lost", out), out
    assert re.search(r"^  check +FAILED", out, re.MULTILINE)


def test_the_report_names_failed_members() -> None:
    import io

    result = DemoResult(3, 2, 10, 64, "quic", 0.1, (0.001,) * 10, 90, ("party1: boom",), failed_members=("party1",))
    out = io.StringIO()
    report(result, out)
    assert "  failed member         party1\n" in out.getvalue()
    assert "  ! party1: boom\n" in out.getvalue()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")
@pytest.mark.skipif(shutil.which("stoffelnet") is None, reason="the stoffelnet console script is missing")
@pytest.mark.parametrize("group", [True, False], ids=["ctrl-c-to-the-group", "sigint-to-the-demo-only"])
async def test_ctrl_c_stops_every_member_and_exits_130(group: bool) -> None:
    stoffelnet = shutil.which("stoffelnet")
    assert stoffelnet is not None
    proc = await asyncio.create_subprocess_exec(
        stoffelnet,
        *("demo", "--rounds", "200000", "--size", "64", "--transport", "tcp-tls"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    assert proc.stdout is not None
    seen = ""
    try:
        async with asyncio.timeout(TIMEOUT):
            while "rounds [" not in seen:  # the rounds are running: every member is up
                line = (await proc.stdout.readline()).decode()
                assert line, f"the demo ended early:\n{seen}"
                seen += line
            if group:
                os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process gets SIGINT
            else:
                proc.send_signal(signal.SIGINT)  # only the demo: it must stop the members itself
            rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 130, seen + rest.decode() + err.decode()
    assert "interrupted by SIGINT; every member was stopped" in err.decode()
    pids = [int(pid) for pid in re.findall(r"pid (\d+)", seen)]
    assert len(pids) == 5
    for pid in pids:  # reaped by the demo before it exited: gone, not even a zombie
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
