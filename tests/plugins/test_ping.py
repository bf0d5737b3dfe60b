"""``stoffelnet ping``: the reachability and identity matrix, against a live tcp-tls network on 127.0.0.1.

Each failure the command exists for is made for real: a stopped party (refused), two parties' pins swapped in the
config (wrong key: "is party 2"), a stranger's key pinned (unpinned), a listener that never speaks (timeout), a
service that is not TLS (protocol). Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import attrs
import pytest

from stoffelnet_core import errors, keys, plugins
from stoffelnet_core.config import Config, dump_config
from stoffelnet_core.frames import PROTOCOL_VERSION
from stoffelnet_core.ids import Address, Node, PartyId
from stoffelnet_core.network import open_network
from stoffelnet_core.ping import PingResult, PingStatus, format_matrix, ping, setup_ping_command
from stoffelnet_core.ping import main as ping_main
from stoffelnet_core.testing import LocalNetwork, _bind_ports, _make_keys, local_network

TIMEOUT = 5.0  # seconds: the bound on every wait here (and ping's per-step timeout)
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def live() -> AsyncIterator[LocalNetwork]:
    """Three parties and client 0 over mutual TLS, connected."""
    async with asyncio.timeout(3 * TIMEOUT), local_network(3, transport="tcp-tls", clients=1) as nets:
        yield nets


def client_config(nets: LocalNetwork) -> Config:
    return nets.clients[0].config


def with_party(config: Config, party: int, **changes: Any) -> Config:
    """`config` with `changes` made to its `parties[party]` entry (address, fingerprint, cert)."""
    parties = list(config.parties)
    parties[party] = attrs.evolve(parties[party], **changes)
    return attrs.evolve(config, parties=tuple(parties))


def run_cli(path: Path, *argv: str) -> Awaitable[int]:
    """The command's runner, in a thread with its own event loop (as the console script runs it)."""
    parser = argparse.ArgumentParser(prog="stoffelnet ping")
    run = setup_ping_command(parser)
    args = parser.parse_args([str(path), "--timeout", str(TIMEOUT), *argv])
    return asyncio.to_thread(run, args)


def write(config: Config, path: Path) -> Path:
    path.write_text(dump_config(config))
    return path


async def healthy(nets: LocalNetwork) -> None:
    """The running network is undisturbed: one broadcast round among the parties, one client round trip."""
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(net.broadcast(b"after ping %d" % net.local_party_id) for net in nets))
        for net in nets:
            got = dict([await net.receive() for _ in range(3)])
            assert got == {i: b"after ping %d" % i for i in range(3)}
        client = nets.clients[0]
        await client.send(1, b"input")
        assert await nets[1].receive_from_client(0) == (0, b"input")
        await nets[1].send_to_client(0, b"output")
        assert await client.receive_from(1) == b"output"


# -- the happy path --------------------------------------------------------------------------------------------------
async def test_every_party_reachable_and_authenticated_from_the_client_config(live: LocalNetwork) -> None:
    config = client_config(live)
    results = await ping(config, timeout=TIMEOUT, count=3)
    assert [r.party for r in results] == [0, 1, 2]
    for r, node in zip(results, config.parties, strict=True):
        assert r.status is PingStatus.OK, r
        assert r.ok
        assert r.reachable
        assert r.authenticated
        assert r.address == str(node.address)
        assert r.identity == f"party {node.id}"
        assert r.fingerprint == node.fingerprint  # the key it proved is the one pinned for it
        assert r.connect_ms is not None
        assert 0 < r.connect_ms < TIMEOUT * 1000
        assert (r.transport, r.alpn, r.protocol_version) == ("tcp-tls", "stoffelnet/1-client", PROTOCOL_VERSION)
        assert (r.probes, r.cause, r.note) == (3, "", "")
    await healthy(live)  # client 0 itself stayed connected throughout


async def test_from_a_party_config_the_own_party_is_skipped(live: LocalNetwork) -> None:
    results = await ping(live[0].config, timeout=TIMEOUT, count=1)
    assert [r.status for r in results] == [PingStatus.SELF, PingStatus.OK, PingStatus.OK]
    assert all(r.ok for r in results)
    assert results[0].note == "this config's own party: not probed"
    assert results[1].alpn == "stoffelnet/1-party"
    upper = await ping(live[2].config, timeout=TIMEOUT, count=1)
    assert [r.status for r in upper] == [PingStatus.OK, PingStatus.OK, PingStatus.SELF]
    await healthy(live)


async def test_parties_waiting_for_the_pinged_member_are_not_disturbed(tmp_path: Path) -> None:
    # Parties 1 and 2 are up and wait for party 0; its operator pings from party 0's config before starting it.
    # Had the probe completed a Handshake as party 0, they would take it for party 0 joining and leaving.
    base = Config(
        transport="tcp-tls",
        party_id=0,
        parties=tuple(Node(PartyId(i), Address("127.0.0.1", 0)) for i in range(3)),
        timeout_ms=int(TIMEOUT * 1000),
    )
    base = await _bind_ports(base)
    base, tls = _make_keys(base, 3, 0, tmp_path)
    configs = [attrs.evolve(base, party_id=i, tls=tls[i]) for i in range(3)]
    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(4 * TIMEOUT):
        waiting = [asyncio.ensure_future(stack.enter_async_context(open_network(configs[i]))) for i in (1, 2)]
        stack.callback(lambda: [task.cancel() for task in waiting])
        for _ in range(100):  # until both listen
            results = await ping(configs[0], timeout=TIMEOUT, count=2)
            if all(r.ok for r in results):
                break
            await asyncio.sleep(0.05)
        assert [r.status for r in results] == [PingStatus.SELF, PingStatus.OK, PingStatus.OK]
        assert not any(task.done() for task in waiting)  # still waiting for party 0, not started without it
        first = await stack.enter_async_context(open_network(configs[0]))
        nets = [first, *[await task for task in waiting]]
        await asyncio.gather(*(net.broadcast(b"from %d" % net.local_party_id) for net in nets))
        for net in nets:
            assert dict([await net.receive() for _ in range(3)]) == {i: b"from %d" % i for i in range(3)}


async def test_command_prints_the_matrix_and_exits_0(
    live: LocalNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(client_config(live), tmp_path / "client0.toml")
    assert await run_cli(path, "--count", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"stoffelnet ping: client 0 ({path}), tcp-tls, 3 parties, 2 probes each")
    assert out[1].split()[:4] == ["PARTY", "ADDRESS", "STATUS", "IDENTITY"]
    for i in range(3):
        cells = out[2 + i].split()
        assert cells[:4] == [str(i), str(live[i].listen_address), "ok", "party"]
    assert out[1].index("STATUS") == out[2].index("ok")  # the columns line up
    assert out[-1] == "3 of 3 parties probed ok: all reachable and authenticated"


async def test_command_json(live: LocalNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(client_config(live), tmp_path / "client0.toml")
    assert await run_cli(path, "--count", "1", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["member"], report["transport"], report["ok"], report["count"]) == ("client 0", "tcp-tls", True, 1)
    assert report["config"] == str(path)
    first = report["parties"][0]
    assert first["protocol_version"] == PROTOCOL_VERSION
    assert first["status"] == "ok"
    assert first["ok"]
    assert first["reachable"]
    assert first["authenticated"]
    assert first["fingerprint"] == client_config(live).parties[0].fingerprint
    assert set(first) >= {"party", "address", "identity", "connect_ms", "alpn", "cause", "note"}


# -- each failure, with its cause -------------------------------------------------------------------------------------
async def test_a_stopped_party_is_refused(
    live: LocalNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = live[2].listen_address
    await live[2].close()
    results = await ping(client_config(live), timeout=TIMEOUT, count=3)
    assert [r.status for r in results] == [PingStatus.OK, PingStatus.OK, PingStatus.REFUSED]
    stopped = results[2]
    assert not (stopped.ok)
    assert not (stopped.reachable)
    assert not (stopped.authenticated)
    assert stopped.cause.startswith(f"connection refused by {address}: nothing listens there")
    assert (stopped.identity, stopped.connect_ms, stopped.probes) == (None, None, 0)
    path = write(client_config(live), tmp_path / "client0.toml")
    assert await run_cli(path, "--count", "1") == 1
    out = capsys.readouterr().out
    assert "refused" in out
    assert "2 of 3 parties probed ok: NOT all reachable and authenticated" in out


async def test_swapped_keys_are_a_wrong_key_naming_who_answered(live: LocalNetwork) -> None:
    config = client_config(live)
    zero, one, two = config.parties
    swapped = (
        zero,
        attrs.evolve(one, fingerprint=two.fingerprint, cert=two.cert),
        attrs.evolve(two, fingerprint=one.fingerprint, cert=one.cert),
    )
    config = attrs.evolve(config, parties=swapped)
    results = await ping(config, timeout=TIMEOUT, count=3)
    assert [r.status for r in results] == [PingStatus.OK, PingStatus.WRONG_KEY, PingStatus.WRONG_KEY]
    assert results[1].identity == "party 2"
    assert "is party 2" in results[1].cause
    assert results[2].identity == "party 1"
    assert "is party 1" in results[2].cause
    assert results[1].reachable
    assert not results[1].authenticated
    assert results[1].fingerprint == config.parties[2].fingerprint
    await healthy(live)


async def test_a_key_nobody_pinned_is_unpinned(live: LocalNetwork, tmp_path: Path) -> None:
    stranger = keys.generate_identity("stranger")
    keys.write_identity(stranger, tmp_path / "stranger.pem", tmp_path / "stranger.key")
    config = with_party(client_config(live), 1, fingerprint=stranger.fingerprint, cert=tmp_path / "stranger.pem")
    results = await ping(config, timeout=TIMEOUT, count=3)
    assert [r.status for r in results] == [PingStatus.OK, PingStatus.UNPINNED, PingStatus.OK]
    assert "pinned for no party" in results[1].cause
    assert results[1].reachable
    assert not results[1].ok
    await healthy(live)


async def test_a_silent_listener_times_out_within_the_bound(live: LocalNetwork) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept the TCP connection, never answer the TLS handshake

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = with_party(client_config(live), 1, address=Address("127.0.0.1", port))
        started = time.perf_counter()
        results = await ping(config, timeout=0.3, count=3)
        elapsed = time.perf_counter() - started
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert [r.status for r in results] == [PingStatus.OK, PingStatus.TIMEOUT, PingStatus.OK]
    assert "no answer from party 1" in results[1].cause
    assert "within 0.3s" in results[1].cause
    assert elapsed < 2.0  # one timeout for the silent party (stopped after its first probe), not one per probe


async def test_a_service_that_is_not_tls_is_a_protocol_failure(live: LocalNetwork) -> None:
    async def http(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = with_party(client_config(live), 2, address=Address("127.0.0.1", port))
        results = await ping(config, timeout=TIMEOUT, count=1)
    finally:
        server.close()
        await server.wait_closed()
    assert results[2].status is PingStatus.PROTOCOL
    assert "does not speak this stoffelnet protocol" in results[2].cause


async def test_bad_arguments_are_refused(live: LocalNetwork) -> None:
    config = client_config(live)
    for count, timeout in ((0, 1.0), (True, 1.0), (1, 0.0), (1, -1.0)):
        with pytest.raises(errors.InvalidArgument):
            await ping(config, timeout=timeout, count=count)


async def test_quic_parties_prove_their_keys_too() -> None:
    if "quic" not in {info.name for info in plugins.default_plugins().transports() if info.ok}:
        pytest.skip("the quic transport is not installed")
    async with asyncio.timeout(3 * TIMEOUT), local_network(3, transport="quic", clients=1) as nets:
        results = await ping(client_config(nets), timeout=TIMEOUT, count=2)
        assert [r.status for r in results] == [PingStatus.OK] * 3
        assert [r.identity for r in results] == ["party 0", "party 1", "party 2"]
        assert {(r.transport, r.alpn, r.protocol_version) for r in results} == {("quic", "stoffelnet/1-client", 1)}
        await healthy(nets)


def test_module_entry_point_reports_a_bad_config_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ping_main([str(tmp_path / "nope.toml")]) == 2
    assert "stoffelnet ping: error: cannot read config file" in capsys.readouterr().err


def test_command_with_a_missing_config_raises_a_config_error(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    run = setup_ping_command(parser)
    with pytest.raises(errors.ConfigError, match="cannot read config file"):
        run(parser.parse_args([str(tmp_path / "nope.toml")]))


def test_matrix_shows_causes_and_notes() -> None:
    results = [
        PingResult(party=0, address="h0:1", status=PingStatus.SELF, transport="tcp-tls", note="own"),
        PingResult(
            party=1,
            address="h1:2",
            status=PingStatus.OK,
            identity="party 1",
            fingerprint="sha256:" + "ab" * 32,
            connect_ms=1.25,
            transport="tcp-tls",
            alpn="stoffelnet/1-party",
            protocol_version=1,
        ),
        PingResult(party=2, address=None, status=PingStatus.NO_ADDRESS, cause="parties[2] has no address"),
    ]
    lines = format_matrix(results).splitlines()
    assert lines[1].split() == ["0", "h0:1", "self", "-", "-", "tcp-tls", "-", "own"]
    assert lines[2].split() == [
        "1",
        "h1:2",
        "ok",
        "party",
        "1",
        "sha256:abababababab...",
        "1.2",
        "tcp-tls",
        "stoffelnet/1-party",
        "v1",
        "-",
    ]
    assert lines[3].endswith("parties[2] has no address")
    assert lines[-1] == "1 of 2 parties probed ok: NOT all reachable and authenticated"
