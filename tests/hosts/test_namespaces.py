"""Parties on separate network hosts: one Linux network namespace per party, joined by veth pairs to a bridge.

The test makes its own namespaces (``sntest-<pid>-<n>-p0`` ... and a ``-br`` namespace holding the bridge), each
party namespace with one veth interface and an address in 10.250.X.0/24, and deletes them afterwards, even when a
test fails. Every interface is created directly inside those namespaces: the host's own interfaces and routes are
never touched, and no traffic leaves the namespaces. It needs root (CAP_NET_ADMIN) and iproute2; where namespaces
cannot be made, it is skipped with the reason.

On those hosts: `stoffelnet ping` from party 0's host before party 0 runs, then the demo computation (all-to-all
rounds, every message checked) over each transport with keys pinned, and the same run with one host holding a
stranger's key instead of its own (its config's pins unchanged), which fails with `AuthenticationError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from stoffelnet_core import keys, plugins
from stoffelnet_core.config import TLSConfig, dump_config, load_config
from stoffelnet_core.deploy import Deployment, make_deployment

PARTIES = 3
PREFIX = "sntest-"  # every namespace this suite makes starts with this, then the pid of the process that made it
STEP_TIMEOUT = 2.0  # seconds: timeout_ms of every config (each dial, handshake, wait on a peer)
RUN_TIMEOUT = 60.0  # seconds: the bound on one member's whole run (killed after that)
IP_TIMEOUT = 10.0  # seconds: the bound on one `ip` command

pytestmark = pytest.mark.timeout(240)

_made = 0


@attrs.frozen
class Hosts:
    """The test's network: one namespace per party, `addresses[i]` being party i's address inside its namespace."""

    namespaces: tuple[str, ...]
    addresses: tuple[str, ...]
    bridge: str


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)


def _must(*args: str) -> None:
    done = _ip(*args)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")


def _namespaces() -> list[str]:
    done = _ip("netns", "list")
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def _delete(names: Sequence[str]) -> None:
    """Delete these namespaces (their veths go with them); a name that is already gone is fine."""
    for name in names:
        if name in _namespaces():
            _ip("netns", "delete", name)


def _remove_stale() -> None:
    """Namespaces an earlier run of this suite left behind when it was killed (its pid is gone)."""
    stale = []
    for name in _namespaces():
        if name.startswith(PREFIX):
            pid = name[len(PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                stale.append(name)
    _delete(stale)


def _cannot_make_namespaces() -> str | None:
    """Why this host cannot give the test namespaces, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed (apt-get install iproute2)"
    probe = f"{PREFIX}{os.getpid()}-probe-{secrets.token_hex(2)}"
    done = _ip("netns", "add", probe)
    if done.returncode != 0:
        return f"cannot create a network namespace (needs root / CAP_NET_ADMIN): {done.stderr.strip()}"
    _delete([probe])
    return None


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    """Three party namespaces on one bridge (in a fourth namespace); deleted afterwards whatever happened."""
    reason = _cannot_make_namespaces()
    if reason is not None:
        pytest.skip(reason)
    _remove_stale()
    global _made
    _made += 1
    stem = f"{PREFIX}{os.getpid()}-{_made}"
    bridge = f"{stem}-br"
    names = tuple(f"{stem}-p{i}" for i in range(PARTIES))
    subnet = secrets.randbelow(250) + 1
    addresses = tuple(f"10.250.{subnet}.{10 + i}" for i in range(PARTIES))
    made = [bridge, *names]
    try:
        try:
            for name in made:
                _must("netns", "add", name)
            _must("-n", bridge, "link", "add", "br0", "type", "bridge")
            _must("-n", bridge, "link", "set", "br0", "up")
            for i, name in enumerate(names):
                # The pair is made inside the bridge's namespace, its peer created straight into the party's:
                # neither end ever exists in the host's namespace.
                _must("-n", bridge, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", name)
                _must("-n", bridge, "link", "set", f"p{i}", "master", "br0")
                _must("-n", bridge, "link", "set", f"p{i}", "up")
                _must("-n", name, "addr", "add", f"{addresses[i]}/24", "dev", "eth0")
                _must("-n", name, "link", "set", "eth0", "up")
                _must("-n", name, "link", "set", "lo", "up")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot build the namespaces' network (veth/bridge support?): {exc}")
        yield Hosts(names, addresses, bridge)
    finally:
        _delete(made)
        assert not set(made) & set(_namespaces()), "a test namespace was left behind"


def _transports() -> list[str]:
    return [info.name for info in plugins.default_plugins().transports() if info.ok]


def _transport_param(name: str) -> object:
    return pytest.param(
        name, marks=pytest.mark.skipif(name not in _transports(), reason=f"transport {name!r} is not installed")
    )


# -- a deployment, one folder per host, as an operator copies it --------------------------------------------------
def _deploy(tmp_path: Path, hosts: Hosts, transport: str) -> tuple[Deployment, list[Path]]:
    """`stoffelnet certs` for the hosts' addresses; host i gets partyI.toml, partyI.key, every *.pem (and the
    client's files on host 0). Every config's step timeout is shortened so that a failing run ends soon."""
    deployment = make_deployment(
        tmp_path / "certs", parties=PARTIES, clients=1, transport=transport, hosts=list(hosts.addresses)
    )
    folders = []
    for i, member in enumerate(deployment.parties):
        folder = tmp_path / f"host{i}"
        folder.mkdir()
        for pem in deployment.out.glob("*.pem"):
            shutil.copy2(pem, folder / pem.name)
        shutil.copy2(member.key, folder / member.key.name)
        config = attrs.evolve(load_config(member.config), timeout_ms=int(STEP_TIMEOUT * 1000), max_retries=8)
        (folder / member.config.name).write_text(dump_config(config, relative_to=folder))
        folders.append(folder)
    client = deployment.clients[0]
    shutil.copy2(client.key, folders[0] / client.key.name)
    shutil.copy2(client.config, folders[0] / client.config.name)
    return deployment, folders


@attrs.frozen
class Outcome:
    status: int
    result: dict[str, Any]
    stderr: str


async def _run(namespace: str, *argv: str) -> Outcome:
    """`python argv...` inside `namespace`, killed after RUN_TIMEOUT; its exit status, last JSON line and stderr."""
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        namespace,
        sys.executable,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(f"{' '.join(argv)} in {namespace} did not finish within {RUN_TIMEOUT}s:\n{err.decode()[-3000:]}")
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    text = out.decode()
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else json.loads(text)
    except (json.JSONDecodeError, IndexError):
        result = {"unparsed stdout": text[-2000:]}
    return Outcome(proc.returncode if proc.returncode is not None else -1, result, err.decode())


def _party(hosts: Hosts, folders: list[Path], i: int, rounds: int) -> asyncio.Task[Outcome]:
    config = str(folders[i] / f"party{i}.toml")
    return asyncio.ensure_future(
        _run(
            hosts.namespaces[i],
            "-m",
            "stoffelnet_core.runner",
            "party",
            config,
            "--rounds",
            str(rounds),
            "--clients",
            "0",
            "--timeout",
            str(RUN_TIMEOUT / 2),
        )
    )


async def _ping(hosts: Hosts, folders: list[Path], config: str) -> Outcome:
    return await _run(
        hosts.namespaces[0], "-m", "stoffelnet_core.ping", str(folders[0] / config), "--json", "--timeout", "2"
    )


async def _gather(tasks: list[asyncio.Task[Outcome]]) -> list[Outcome]:
    """Every run's outcome; if one fails or this is cancelled, the others are cancelled (killing their processes)."""
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:  # one failed: the others are cancelled, which kills their processes
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the tests ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", [_transport_param("tcp-tls"), _transport_param("quic")])
async def test_ping_then_the_computation_across_hosts(hosts: Hosts, tmp_path: Path, transport: str) -> None:
    _, folders = _deploy(tmp_path, hosts, transport)
    # Parties 1 and 2 start; party 0's operator pings from its host before starting it.
    later = [_party(hosts, folders, i, rounds=20) for i in (1, 2)]
    try:
        unreachable = await _ping(hosts, folders, "client0.toml")  # a client's view: who is up?
        for _ in range(50):  # parties 1 and 2 may still be starting: ping is also how an operator waits for them
            statuses = [p["status"] for p in unreachable.result["parties"]]
            if statuses[1:] == ["ok", "ok"]:
                break
            await asyncio.sleep(0.2)
            unreachable = await _ping(hosts, folders, "client0.toml")
        assert unreachable.status == 1, unreachable
        parties = unreachable.result["parties"]
        # Nothing listens on party 0's port: TCP says so at once; QUIC (UDP) only goes unanswered.
        down = "refused" if transport == "tcp-tls" else "timeout"
        assert [p["status"] for p in parties] == [down, "ok", "ok"], parties
        assert f"{hosts.addresses[0]}:9000" in parties[0]["cause"]
        for i in (1, 2):
            assert parties[i]["identity"] == f"party {i}"
            assert parties[i]["address"] == f"{hosts.addresses[i]}:{9000 + i}"
            assert parties[i]["protocol_version"] == 1  # agreed in the TLS handshake (ALPN stoffelnet/1-client)

        ping0 = await _ping(hosts, folders, "party0.toml")  # party 0's own view before it starts
        assert ping0.status == 0, ping0
        assert [p["status"] for p in ping0.result["parties"]] == ["self", "ok", "ok"]

        later.append(_party(hosts, folders, 0, rounds=20))  # the pings disturbed nothing: the run completes
    except BaseException:
        for task in later:  # cancelling a run kills its process
            task.cancel()
        await asyncio.gather(*later, return_exceptions=True)
        raise
    outcomes = await _gather(later)
    for i, outcome in zip((1, 2, 0), outcomes, strict=True):
        assert outcome.status == 0, f"party {i}: {outcome.result}\n{outcome.stderr[-3000:]}"
        assert outcome.result["ok"] is True
        assert outcome.result["id"] == i
        assert outcome.result["messages_received"] == 20 * PARTIES


@pytest.mark.parametrize("transport", [_transport_param("tcp-tls"), _transport_param("quic")])
async def test_a_host_with_a_strangers_key_fails_with_authentication_error(
    hosts: Hosts, tmp_path: Path, transport: str
) -> None:
    _, folders = _deploy(tmp_path, hosts, transport)
    # Host 1 holds a stranger's key and certificate (say, a rebuilt machine); every config, its own included,
    # still pins party 1's real key.
    stranger = keys.generate_identity("party1")
    keys.write_identity(stranger, folders[1] / "stranger.pem", folders[1] / "stranger.key")
    config_path = folders[1] / "party1.toml"
    config = load_config(config_path)
    config = attrs.evolve(config, tls=TLSConfig(folders[1] / "stranger.pem", folders[1] / "stranger.key"))
    config_path.write_text(dump_config(config, relative_to=folders[1]))

    outcomes = await _gather([_party(hosts, folders, i, rounds=20) for i in range(PARTIES)])
    for i, outcome in enumerate(outcomes):
        assert outcome.status == 1, f"party {i} should have failed: {outcome.result}"
        assert outcome.result["ok"] is False
    failures = {i: " ".join(map(str, outcome.result["failures"])) for i, outcome in enumerate(outcomes)}
    # Party 0 dials party 1 and refuses the key it proves.
    assert "AuthenticationError" in failures[0], failures
    # Party 2 refuses party 1's connection, and says so in its log.
    assert "AuthenticationError" in outcomes[2].stderr, outcomes[2].stderr[-3000:]

    ping = await _ping(hosts, folders, "client0.toml")  # nothing runs any more: everyone is refused
    assert ping.status == 1
