"""The lower-level API (NetworkManager, PeerConnection) and the demo, over loopback."""

from __future__ import annotations

import asyncio
import secrets

import pytest

import stoffelnet_core as sn
from stoffelnet_core import errors
from stoffelnet_core.demo import run_demo
from stoffelnet_core.testing import local_network


def _config(n: int, **changes: object) -> sn.Config:
    host = f"mgr-{secrets.token_hex(4)}"
    parties = tuple(sn.Node(sn.PartyId(i), sn.Address(host, 2000 + i)) for i in range(n))
    return sn.Config(transport="loopback", parties=parties, **changes)  # type: ignore[arg-type]


async def test_manager_connect_accept_and_seed_names() -> None:
    base = _config(2, party_id=0)
    async with sn.NetworkManager(base) as m0, sn.NetworkManager(_with(base, party_id=1)) as m1:
        await m1.listen()
        conn = await m0.connect(1)
        accepted = await m1.accept(timeout=5)
        assert conn.remote_party_id == 1
        assert accepted.remote_party_id == 0
        assert conn.state is sn.ConnectionState.CONNECTED
        assert conn.role is sn.ClientType.SERVER
        assert m0.get_connection(1) is conn
        await conn.send(b"on stream 0")
        await conn.send_on_stream(3, b"on stream 3")
        assert await accepted.receive_from_stream(3, timeout=5) == b"on stream 3"
        assert await accepted.receive(timeout=5) == b"on stream 0"
        await accepted.send(b"back")
        assert await conn.receive(timeout=5) == b"back"
        await conn.close()
        state: sn.ConnectionState = conn.state  # mypy narrowed it above; close() changed it
        assert state is sn.ConnectionState.CLOSED
        with pytest.raises(errors.StreamClosed):
            await accepted.receive(timeout=5)


async def test_manager_client_role_and_dialer_checks_whom_it_reached() -> None:
    base = _config(2, party_id=1)
    async with sn.NetworkManager(base) as server, sn.NetworkManager(_with(base, party_id=None, client_id=4)) as cli:
        await server.listen()
        conn = await cli.connect_as_client(1)
        accepted = await server.accept(timeout=5)
        assert accepted.role is sn.ClientType.CLIENT
        assert accepted.peer is not None
        assert accepted.peer.id == 4
        assert server.get_client_connection(4) is accepted
        await conn.send(b"input")
        assert await accepted.receive(timeout=5) == b"input"
        # The party that listens at party 1's address is party 1; dialing it as "party 0's address" must fail.
        wrong = _with(
            base, party_id=None, client_id=5, parties=(sn.Node(sn.PartyId(0), base.node(1).address), base.node(1))
        )
        async with sn.NetworkManager(wrong) as liar:
            with pytest.raises(errors.AuthenticationError, match="dialed party 0"):
                await liar.connect_as_client(0)


async def test_accept_timeout_and_unknown_party() -> None:
    async with sn.NetworkManager(_config(2, party_id=1)) as m:
        await m.listen()
        with pytest.raises(errors.Timeout):
            await m.accept(timeout=0.01)
        with pytest.raises(errors.PartyNotFound):
            await m.connect(7)


async def test_refused_dial_retries_then_fails_with_initialization_failed() -> None:
    config = _config(2, party_id=0, max_retries=2)
    async with sn.NetworkManager(config) as m:
        with pytest.raises(errors.InitializationFailed, match="after 3 attempts"):
            await m.connect(1)


async def test_parties_start_in_any_order() -> None:
    base = _config(3, party_id=0, max_retries=20)
    configs = [_with(base, party_id=i) for i in range(3)]

    async def party(i: int, started: asyncio.Event | None) -> list[int]:
        if started is not None:
            await started.wait()
        async with sn.open_network(configs[i]) as net:
            await net.broadcast(b"%d" % i)
            return sorted([int(await net.receive_from(p, timeout=5)) for p in range(3)])

    first = asyncio.Event()
    # party 2 (dialed by everyone) starts last: the others retry until it listens
    tasks = [
        asyncio.create_task(party(0, None)),
        asyncio.create_task(party(1, None)),
        asyncio.create_task(party(2, first)),
    ]
    await asyncio.sleep(0.01)
    first.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert results == [[0, 1, 2]] * 3


async def test_unknown_transport_is_a_plugin_error_naming_the_distribution() -> None:
    config = _with(_config(1, party_id=0), transport="carrier-pigeon")
    with pytest.raises(errors.PluginError, match="stoffelnet-carrier-pigeon"):
        async with sn.open_network(config):
            pass


async def test_stats_count_messages_and_bytes() -> None:
    async with local_network(2) as lan:
        await lan[0].send(1, b"12345")
        await lan[1].receive_from(0, timeout=5)
        stats = lan[0].stats().peers[1]
        assert (stats.messages_sent, stats.bytes_sent) == (1, 5)
        assert lan[1].stats().peers[0].messages_received == 1
        assert stats.state is sn.ConnectionState.CONNECTED


async def test_demo_checks_every_message() -> None:
    result = await run_demo(parties=3, clients=2, rounds=20, size=300)
    assert result.ok, result.failures
    assert result.messages == 20 * 3 * 3


def _with(config: sn.Config, **changes: object) -> sn.Config:
    import attrs

    return attrs.evolve(config, **changes)  # type: ignore[arg-type]


async def test_stats_report_the_handshake_round_trip_on_the_dialing_side() -> None:
    async with local_network(2, transport="tcp-tls") as lan:
        rtt = lan[0].stats().peers[1].last_rtt  # party 0 dialed party 1
        assert rtt is not None
        assert 0 < rtt < 5
        assert lan[0].stats().peers[1].reconnects == 0


async def test_sending_to_a_party_that_closed_raises_stream_closed_naming_it() -> None:
    async with local_network(2) as lan:
        await lan[0].close()
        with pytest.raises(errors.StreamClosed) as info:
            await lan[1].receive_from(0, timeout=5)  # wait until party 1 saw the close
        assert info.value.peer == 0
        with pytest.raises(errors.StreamClosed, match="party 0 closed the connection") as sent:
            await lan[1].send(0, b"too late", timeout=5)
        assert sent.value.peer == 0
