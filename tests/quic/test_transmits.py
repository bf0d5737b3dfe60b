"""How often the transport asks the engine for datagrams, and how it finds the connection a datagram is for: the
engine pass per transmit is most of what a message costs on QUIC, so these are pinned.

What arrives is answered by one deferred transmit (`_Protocol.transmit_soon`): when the arrival wakes a task that
answers on the next loop turn, the answer's transmit carries whatever the arrival called for, instead of a transmit
of its own that would mostly build nothing (the engine delays its acknowledgements). An arrival nobody answers is
still transmitted for within a few loop turns. A listener routes short-header packets by connection id in the
engine server's own table (`_Endpoint.dispatch`) rather than through the server's header parse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from stoffelnet_core.network import Network
from stoffelnet_core.testing import local_network
from stoffelnet_quic.transport import _Protocol

from .conftest import ON_EVERY_ENGINE, quic_protocol, quic_server

TIMEOUT = 10.0
ROUND_TRIPS = 200


def count_transmits(p: _Protocol) -> dict[str, int]:
    """Count the engine passes of `p`'s connection: those that built datagrams, and those that built none."""
    counts = {"sent": 0, "empty": 0}
    original: Callable[..., list[tuple[bytes, Any]]] = p.quic.datagrams_to_send

    def counted(now: float) -> list[tuple[bytes, Any]]:
        datagrams = original(now=now)
        counts["sent" if datagrams else "empty"] += 1
        return datagrams

    p.quic.datagrams_to_send = counted
    return counts


async def ping_pong(a: Network, b: Network, n: int) -> None:
    for _ in range(n):
        await a.send(1, b"ping")
        assert await b.receive_from(0) == b"ping"
        await b.send(0, b"pong")
        assert await a.receive_from(1) == b"pong"


async def test_an_answer_carries_what_its_arrival_called_for() -> None:
    """In a ping-pong each side's answer goes out in one engine pass that also does what the arrival called for:
    one pass that sends per hop (and the engine's ack timer now and then), almost none that build nothing. The
    transport used to transmit right after every arrival as well, which built nothing about once per hop."""
    async with local_network(2, transport="quic") as (a, b):
        async with asyncio.timeout(TIMEOUT):
            await ping_pong(a, b, 20)
            counts = [count_transmits(quic_protocol(a, 1)), count_transmits(quic_protocol(b, 0))]
            await ping_pong(a, b, ROUND_TRIPS)
    sent = sum(c["sent"] for c in counts) / ROUND_TRIPS
    empty = sum(c["empty"] for c in counts) / ROUND_TRIPS
    assert 2 <= sent < 3.5, f"{sent:.2f} engine passes that sent per round trip"
    assert empty < 0.5, f"{empty:.2f} engine passes that built nothing per round trip (it was 2.3)"


@ON_EVERY_ENGINE
async def test_an_arrival_nobody_answers_is_transmitted_for_within_a_few_loop_turns(engine: str) -> None:
    """Without an answer, the receiver still transmits (its acknowledgement, flow-control updates) a few loop turns
    after the data arrived, not only when the engine's timer fires."""
    async with local_network(2, transport="quic", transport_options={"quic": {"engine": engine}}) as (a, b):
        async with asyncio.timeout(TIMEOUT):
            await ping_pong(a, b, 5)
            receiver = quic_protocol(b, 0)
            counts = count_transmits(receiver)
            await a.send(1, b"nobody answers this")
            assert await b.receive_from(0) == b"nobody answers this"
            for _ in range(6):
                await asyncio.sleep(0)
        assert counts["sent"] + counts["empty"] >= 1, "the receiver never asked its engine for datagrams"
        assert not receiver._owed, "a transmit is still owed after six loop turns"


@ON_EVERY_ENGINE
async def test_short_headers_are_routed_in_the_servers_own_table(engine: str) -> None:
    """The listener's fast routing reads the engine server's connection-id table itself (private in both engines:
    pinned here), so it sees every connection id the server issues or retires; a short-header packet for an
    unknown id goes nowhere, as the server would have it."""
    async with local_network(2, transport="quic", transport_options={"quic": {"engine": engine}}) as (a, b):
        endpoint = quic_server(b)
        assert endpoint._routes is endpoint.server._protocols
        accepted = quic_protocol(b, 0)
        assert accepted in endpoint._routes.values()
        seen: list[bytes] = []
        original = accepted.datagram_received

        def tapped(data: bytes | str, addr: Any) -> None:
            assert isinstance(data, bytes)
            seen.append(data)
            original(data, addr)

        accepted.datagram_received = tapped  # type: ignore[method-assign]
        endpoint.dispatch(bytes([0x40]) + bytes(40), ("127.0.0.1", 9))  # an id nobody was given
        assert not seen
        async with asyncio.timeout(TIMEOUT):
            await ping_pong(a, b, 3)  # the dialer's packets: short headers for the accepted connection's ids
        assert seen
