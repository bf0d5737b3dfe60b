"""Parties on separate network hosts: one Linux network namespace per party, and one for the clients, joined by
veth pairs to a bridge.

The test makes its own namespaces (``sntest-<pid>-<n>-p0`` ... for the parties, ``-c`` for the clients' host and a
``-br`` namespace holding the bridge), each party's and the clients' namespace with one veth interface and an
address in 10.250.X.0/24, and deletes them afterwards, even when a test fails. Every interface is created directly
inside those namespaces: the host's own interfaces and routes are never touched, and no traffic leaves the
namespaces. It needs root (CAP_NET_ADMIN) and iproute2; where namespaces cannot be made, it is skipped with the
reason.

On those hosts: `stoffelnet ping` from the clients' host and from party 0's host before party 0 runs, then the
demo's full computation over each transport with keys pinned -- two clients on their own host give their inputs,
the parties compute the sum and the product (one BGW multiplication) and open both to the clients, which check them,
then the parties' all-to-all rounds, every message checked -- and the same computation with one host holding a
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
from stoffelnet_core.computation import expected_results
from stoffelnet_core.config import TLSConfig, dump_config, load_config
from stoffelnet_core.demo import client_inputs
from stoffelnet_core.deploy import Deployment, Member, make_deployment

PARTIES = 3
CLIENTS = 2  # both on the clients' host, each dialing every party
ROUNDS = 20
INPUTS = client_inputs(CLIENTS)  # the demo's inputs: client j has 17 * (j + 1) + 3
PREFIX = "sntest-"  # every namespace this suite makes starts with this, then the pid of the process that made it
STEP_TIMEOUT = 2.0  # seconds: timeout_ms of every config (each dial, handshake, wait on a peer)
RUN_TIMEOUT = 60.0  # seconds: the bound on one member's whole run (killed after that)
CLIENT_TIMEOUT = 15.0  # seconds a party waits for the clients once the parties are connected (they start with party 0)
IP_TIMEOUT = 10.0  # seconds: the bound on one `ip` command

pytestmark = pytest.mark.timeout(240)

_made = 0


@attrs.frozen
class Hosts:
    """The test's network: one namespace per party, `addresses[i]` being party i's address inside its namespace,
    and the clients' namespace `client` (address `client_address`), all on one bridge."""

    namespaces: tuple[str, ...]
    addresses: tuple[str, ...]
    bridge: str
    client: str
    client_address: str


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
    """Three party namespaces and the clients' namespace on one bridge (in a namespace of its own); deleted
    afterwards whatever happened."""
    reason = _cannot_make_namespaces()
    if reason is not None:
        pytest.skip(reason)
    _remove_stale()
    global _made
    _made += 1
    stem = f"{PREFIX}{os.getpid()}-{_made}"
    bridge = f"{stem}-br"
    names = tuple(f"{stem}-p{i}" for i in range(PARTIES))
    client = f"{stem}-c"
    subnet = secrets.randbelow(250) + 1
    addresses = tuple(f"10.250.{subnet}.{10 + i}" for i in range(PARTIES))
    client_address = f"10.250.{subnet}.100"
    # (namespace, its port on the bridge, its address): every party's host, then the clients' host
    attached = [*((name, f"p{i}", addresses[i]) for i, name in enumerate(names)), (client, "c0", client_address)]
    made = [bridge, *names, client]
    try:
        try:
            for name in made:
                _must("netns", "add", name)
            _must("-n", bridge, "link", "add", "br0", "type", "bridge")
            _must("-n", bridge, "link", "set", "br0", "up")
            for name, port, address in attached:
                # The pair is made inside the bridge's namespace, its peer created straight into the host's:
                # neither end ever exists in the machine's own namespace.
                _must("-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
                _must("-n", bridge, "link", "set", port, "master", "br0")
                _must("-n", bridge, "link", "set", port, "up")
                _must("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
                _must("-n", name, "link", "set", "eth0", "up")
                _must("-n", name, "link", "set", "lo", "up")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot build the namespaces' network (veth/bridge support?): {exc}")
        yield Hosts(names, addresses, bridge, client, client_address)
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
@attrs.frozen
class Folders:
    """What each host holds: `parties[i]` party i's host, `client` the clients' host."""

    parties: list[Path]
    client: Path


def _deploy(tmp_path: Path, hosts: Hosts, transport: str) -> tuple[Deployment, Folders]:
    """`stoffelnet certs` for the hosts' addresses; host i gets partyI.toml, partyI.key and every *.pem, the
    clients' host clientJ.toml and clientJ.key of every client and every *.pem. Every config's step timeout (and
    retries) is shortened so that a failing run ends soon."""
    deployment = make_deployment(
        tmp_path / "certs", parties=PARTIES, clients=CLIENTS, transport=transport, hosts=list(hosts.addresses)
    )

    def place(folder: Path, member: Member) -> None:
        folder.mkdir(exist_ok=True)
        for pem in deployment.out.glob("*.pem"):
            shutil.copy2(pem, folder / pem.name)
        shutil.copy2(member.key, folder / member.key.name)
        config = attrs.evolve(load_config(member.config), timeout_ms=int(STEP_TIMEOUT * 1000), max_retries=8)
        (folder / member.config.name).write_text(dump_config(config, relative_to=folder))

    folders = Folders([tmp_path / f"host{i}" for i in range(PARTIES)], tmp_path / "clients")
    for i, member in enumerate(deployment.parties):
        place(folders.parties[i], member)
    for member in deployment.clients:
        place(folders.client, member)
    return deployment, folders


@attrs.frozen
class Outcome:
    status: int
    result: dict[str, Any]
    stdout: str
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
    return Outcome(proc.returncode if proc.returncode is not None else -1, result, text, err.decode())


def _party(hosts: Hosts, folders: Folders, i: int) -> asyncio.Task[Outcome]:
    """Party i on its host: the computation for both clients, then the rounds."""
    config = str(folders.parties[i] / f"party{i}.toml")
    return asyncio.ensure_future(
        _run(
            hosts.namespaces[i],
            "-m",
            "stoffelnet_core.runner",
            "party",
            config,
            "--clients",
            str(CLIENTS),
            "--rounds",
            str(ROUNDS),
            "--timeout",
            str(RUN_TIMEOUT / 2),
            "--client-timeout",
            str(CLIENT_TIMEOUT),
        )
    )


def _client(hosts: Hosts, folders: Folders, j: int) -> asyncio.Task[Outcome]:
    """Client j on the clients' host: gives its input and checks the opened results against the expected ones."""
    expect = expected_results(INPUTS)
    assert expect is not None
    config = str(folders.client / f"client{j}.toml")
    return asyncio.ensure_future(
        _run(
            hosts.client,
            "-m",
            "stoffelnet_core.runner",
            "client",
            config,
            "--input",
            str(INPUTS[j]),
            "--expect-sum",
            str(expect.sum),
            "--expect-product",
            str(expect.product),
            "--timeout",
            str(RUN_TIMEOUT / 2),
        )
    )


async def _ping(namespace: str, config: Path) -> Outcome:
    return await _run(namespace, "-m", "stoffelnet_core.ping", str(config), "--json", "--timeout", "2")


async def _gather(tasks: list[asyncio.Task[Outcome]]) -> list[Outcome]:
    """Every run's outcome; if one fails or this is cancelled, the others are cancelled (killing their processes)."""
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:  # one failed: the others are cancelled, which kills their processes
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the tests ------------------------------------------------------------------------------------------------------
def _assert_computed(parties: dict[int, Outcome], clients: dict[int, Outcome]) -> None:
    """Every member passed: each client opened (and checked) the right sum and product, each party served both
    clients and then got every round's message from every party."""
    expect = expected_results(INPUTS)
    assert expect is not None
    for j, outcome in clients.items():
        assert outcome.status == 0, f"client {j}: {outcome.result}\n{outcome.stderr[-3000:]}"
        assert outcome.result["ok"] is True, outcome.result
        assert outcome.result["role"] == "client"
        assert outcome.result["id"] == j
        assert outcome.result["input"] == INPUTS[j]
        assert outcome.result["checked"] is True  # checked against --expect-sum / --expect-product
        assert (outcome.result["sum"], outcome.result["product"]) == (expect.sum, expect.product)
        assert f"sum = {expect.sum}\nproduct = {expect.product}\n" in outcome.stdout, outcome.stdout
    for i, outcome in parties.items():
        assert outcome.status == 0, f"party {i}: {outcome.result}\n{outcome.stderr[-3000:]}"
        assert outcome.result["ok"] is True, outcome.result
        assert outcome.result["id"] == i
        assert outcome.result["clients_served"] == CLIENTS
        assert outcome.result["messages_received"] == ROUNDS * PARTIES


@pytest.mark.parametrize("transport", [_transport_param("tcp-tls"), _transport_param("quic")])
async def test_ping_then_the_computation_across_hosts(hosts: Hosts, tmp_path: Path, transport: str) -> None:
    _, folders = _deploy(tmp_path, hosts, transport)
    client0 = folders.client / "client0.toml"
    # Parties 1 and 2 start; the clients' operator pings from the clients' host, party 0's from party 0's host
    # before starting it.
    later = [_party(hosts, folders, i) for i in (1, 2)]
    try:
        unreachable = await _ping(hosts.client, client0)  # a client's view, from its own host: who is up?
        for _ in range(50):  # parties 1 and 2 may still be starting: ping is also how an operator waits for them
            statuses = [p["status"] for p in unreachable.result["parties"]]
            if statuses[1:] == ["ok", "ok"]:
                break
            await asyncio.sleep(0.2)
            unreachable = await _ping(hosts.client, client0)
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

        ping0 = await _ping(hosts.namespaces[0], folders.parties[0] / "party0.toml")  # party 0's own view
        assert ping0.status == 0, ping0
        assert [p["status"] for p in ping0.result["parties"]] == ["self", "ok", "ok"]

        # The pings disturbed nothing: party 0 and both clients start, and the whole computation completes.
        later.append(_party(hosts, folders, 0))
        later += [_client(hosts, folders, j) for j in range(CLIENTS)]
    except BaseException:
        for task in later:  # cancelling a run kills its process
            task.cancel()
        await asyncio.gather(*later, return_exceptions=True)
        raise
    outcomes = await _gather(later)
    _assert_computed(dict(zip((1, 2, 0), outcomes[:PARTIES], strict=True)), dict(enumerate(outcomes[PARTIES:])))


@pytest.mark.parametrize("transport", [_transport_param("tcp-tls"), _transport_param("quic")])
async def test_a_host_with_a_strangers_key_fails_with_authentication_error(
    hosts: Hosts, tmp_path: Path, transport: str
) -> None:
    _, folders = _deploy(tmp_path, hosts, transport)
    # Host 0 holds a stranger's key and certificate (say, a rebuilt machine); every config, its own included,
    # still pins party 0's real key. (Host 0, which dials the other parties but is dialed only by the clients: so
    # it stays up while the clients reach it, and they meet its key whatever the timing.)
    host0 = folders.parties[0]
    stranger = keys.generate_identity("party0")
    keys.write_identity(stranger, host0 / "stranger.pem", host0 / "stranger.key")
    config_path = host0 / "party0.toml"
    config = load_config(config_path)
    config = attrs.evolve(config, tls=TLSConfig(host0 / "stranger.pem", host0 / "stranger.key"))
    config_path.write_text(dump_config(config, relative_to=host0))

    # The same computation as above: every party and both clients.
    runs = [_party(hosts, folders, i) for i in range(PARTIES)] + [_client(hosts, folders, j) for j in range(CLIENTS)]
    outcomes = await _gather(runs)
    parties, clients = outcomes[:PARTIES], outcomes[PARTIES:]
    for i, outcome in enumerate(parties):
        assert outcome.status == 1, f"party {i} should have failed: {outcome.result}"
        assert outcome.result["ok"] is False
    for j, outcome in enumerate(clients):
        assert outcome.status == 1, f"client {j} should have failed: {outcome.result}"
        assert outcome.result["ok"] is False
        # Each client dials party 0 and refuses the key it proves (tcp-tls names its address, quic the party it
        # claims to be): nothing is computed, nothing opened.
        failures = " ".join(map(str, outcome.result["failures"]))
        assert "AuthenticationError" in failures, outcome.result
        assert f"{hosts.addresses[0]}:9000" in failures or "party 0" in failures, outcome.result
        assert outcome.result.get("sum") is None, outcome.result
        assert outcome.result.get("product") is None, outcome.result
        assert "sum =" not in outcome.stdout
    # Parties 1 and 2 refuse party 0's connections, and say so in their logs.
    for i in (1, 2):
        assert "AuthenticationError" in parties[i].stderr, parties[i].stderr[-3000:]

    ping = await _ping(hosts.client, folders.client / "client0.toml")  # nothing runs any more: everyone is refused
    assert ping.status == 1
