"""``stoffelnet party CONFIG`` and ``stoffelnet client CONFIG --input X``: the demo's computation, one member per OS
process, from the configs `stoffelnet certs` writes (here `deploy.make_deployment`), started in random order.

Every wait is bounded; nothing sleeps to synchronise (a process is known to be listening from its own log line).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import sys
from pathlib import Path

import pytest

from stoffelnet_core import deploy
from stoffelnet_core.demo import _free_port_range

pytestmark = pytest.mark.skipif(shutil.which("stoffelnet") is None, reason="the stoffelnet console script is missing")

TIMEOUT = 60.0  # seconds: the bound on each whole run


async def _start(*args: str) -> asyncio.subprocess.Process:
    stoffelnet = shutil.which("stoffelnet")
    assert stoffelnet is not None
    return await asyncio.create_subprocess_exec(
        stoffelnet,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _deployment(tmp_path: Path, transport: str, parties: int = 3, clients: int = 2) -> deploy.Deployment:
    return deploy.make_deployment(
        tmp_path / "deploy",
        parties=parties,
        clients=clients,
        transport=transport,
        base_port=_free_port_range(parties),
    )


@pytest.mark.parametrize("transport", ["tcp-tls", "quic"])
async def test_three_parties_and_two_clients_in_random_order(tmp_path: Path, transport: str) -> None:
    d = _deployment(tmp_path, transport)
    inputs = {0: 1234, 1: 5678}
    commands = [(m.name, ["party", str(m.config)]) for m in d.parties]
    commands += [(m.name, ["client", str(m.config), "--input", str(inputs[m.id])]) for m in d.clients]
    random.shuffle(commands)
    procs = {name: await _start(*args) for name, args in commands}
    try:
        finished = dict(zip(procs, await asyncio.gather(*(_finish(p) for p in procs.values())), strict=True))
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for name, (code, out, err) in finished.items():
        assert code == 0, f"{name} exited {code}:\n{out}\n{err}"
    for client in ("client0", "client1"):
        out = finished[client][1]
        assert out.splitlines() == ["sum = 6912", f"product = {1234 * 5678}"]
    for party in ("party0", "party1", "party2"):
        assert finished[party][1].splitlines() == [f"party {party[-1]}: served 2 clients"]


async def test_json_results_and_json_logs_name_the_member(tmp_path: Path) -> None:
    d = _deployment(tmp_path, "tcp-tls", parties=2, clients=1)
    logging = ["--json", "--log-level", "info", "--log-json"]
    procs = [await _start("party", str(m.config), "--rounds", "5", "--size", "100", *logging) for m in d.parties]
    expect = ["--expect-sum", "41", "--expect-product", "41"]
    procs.append(await _start("client", str(d.clients[0].config), "--input", "41", *expect, *logging))
    finished = await asyncio.gather(*(_finish(p) for p in procs))
    for code, out, err in finished:
        assert code == 0, out + err
    party0 = json.loads(finished[0][1].splitlines()[-1])
    assert party0["ok"] is True
    assert party0["clients_served"] == 1
    assert len(party0["latencies_s"]) == 5
    client_out = finished[2][1].splitlines()
    assert client_out[:2] == ["sum = 41", "product = 41"]
    assert json.loads(client_out[-1])["checked"] is True
    for (_, _, err), member in zip(finished, ["party0", "party1", "client0"], strict=True):
        entries = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert entries, f"{member} logged nothing at INFO"
        assert {entry["member"] for entry in entries} == {member}
        assert all({"ts", "level", "logger", "member", "message"} <= set(entry) for entry in entries)


async def test_a_client_whose_expectation_fails_exits_1(tmp_path: Path) -> None:
    d = _deployment(tmp_path, "tcp-tls", parties=1, clients=1)
    party = await _start("party", str(d.parties[0].config))
    client = await _start(
        "client", str(d.clients[0].config), "--input", "7", "--expect-sum", "8", "--expect-product", "7"
    )
    (party_code, _, _), (code, out, err) = await asyncio.gather(_finish(party), _finish(client))
    assert party_code == 0
    assert code == 1
    assert out.splitlines() == ["sum = 7", "product = 7"]
    assert "client 0: sum = 7, expected 8" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "-1"], "--input must be a field element"),
        (["--input", "1", "--expect-sum", "1"], "--expect-sum and --expect-product go together"),
        (["--input", "1", "--log-level", "chatty"], "log level must be one of"),
    ],
)
async def test_bad_client_options_exit_2_before_connecting(tmp_path: Path, args: list[str], message: str) -> None:
    d = _deployment(tmp_path, "tcp-tls", parties=1, clients=1)
    code, out, err = await _finish(await _start("client", str(d.clients[0].config), *args))
    assert code == 2
    assert out == ""
    assert message in err


async def test_a_party_config_given_to_client_exits_2(tmp_path: Path) -> None:
    d = _deployment(tmp_path, "tcp-tls", parties=1, clients=1)
    code, _, err = await _finish(await _start("client", str(d.parties[0].config), "--input", "1"))
    assert code == 2
    assert "is the config of party0, not of a client" in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_sigterm_stops_a_waiting_party_cleanly_with_143(tmp_path: Path) -> None:
    d = _deployment(tmp_path, "tcp-tls", parties=1, clients=1)
    party = await _start("party", str(d.parties[0].config), "--json", "--log-level", "info")
    assert party.stderr is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            while b"listening on" not in (line := await party.stderr.readline()):
                assert line, "the party ended before it listened"
        party.send_signal(signal.SIGTERM)  # it waits for its client, which never comes
        code, out, _ = await _finish(party)
    finally:
        if party.returncode is None:
            party.kill()
            await party.wait()
    assert code == 143
    result = json.loads(out.splitlines()[-1])
    assert result["interrupted"] == "SIGTERM"
    assert result["phase"] == "computation"
    assert result["failures"] == ["interrupted by SIGTERM during computation"]
