"""Every stoffelnet stream travels on a QUIC stream of its own, so a stream that waits for a lost packet holds up no
other (QUIC's own answer to head-of-line blocking), on every engine.

Core's channels go through `mux.StreamMultiplexer` onto the transport's native streams (`QuicPipe` is a
`StreamPipe`): one direction of a bidirectional QUIC stream per channel and direction, plus one for core's credit;
each side writes first on the peer's streams whose direction back it does not use yet. The loss here is real and
deterministic: the sender's UDP socket drops exactly the datagrams of one flush, so that QUIC has to detect the loss
and send that data again, while the next message, on another stream, goes out intact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from stoffelnet_core.testing import local_network
from stoffelnet_core.testing.hostile import SPARE_CLIENT, Victim, assert_unaffected
from stoffelnet_quic import transport as quic_transport

from .conftest import ALPN_CLIENT, ON_EVERY_ENGINE, RawQuicPeer, quic_pipe

TIMEOUT = 10.0

pytestmark = ON_EVERY_ENGINE


class DroppingSocket:
    """A UDP transport that drops what is sent while `dropping` is set (the datagrams are lost on the way)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dropping = False
        self.dropped = asyncio.Event()

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if self.dropping:
            self.dropped.set()
            return
        self.inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_each_stoffelnet_stream_travels_on_a_quic_stream_of_its_own(engine: str) -> None:
    """Messages on streams 0, 1 and 7 arrive on three distinct QUIC streams (besides the control stream), each
    carrying only its own stream's bytes; every QUIC stream is bidirectional, and each direction of one carries a
    single channel."""
    async with local_network(2, transport="quic", transport_options={"quic": {"engine": engine}}) as (a, b):
        receiving = quic_pipe(b, 0)
        seen: dict[int, int] = {}  # QUIC stream id -> bytes that arrived on it
        original = receiving.stream_data

        def record(stream_id: int, data: bytes, end_stream: bool) -> None:
            seen[stream_id] = seen.get(stream_id, 0) + len(data)
            original(stream_id, data, end_stream)

        receiving.stream_data = record  # type: ignore[method-assign]
        payload = {0: b"zero" * 1000, 1: b"one" * 3000, 7: b"seven" * 5000}
        async with asyncio.timeout(TIMEOUT):
            for stream, data in payload.items():
                await a.send(1, data, stream=stream)
            for stream, data in payload.items():
                assert await b.receive_from(0, stream=stream) == data
        assert all(stream_id & 2 == 0 for stream_id in seen), f"a unidirectional QUIC stream: {seen}"
        big = sorted(n for n in seen.values() if n >= 4000)  # the three messages' streams (control frames are small)
        assert len(big) == 3, f"bytes per QUIC stream: {seen}"
        assert big[0] >= len(payload[0])
        assert big[1] >= len(payload[1])
        assert big[2] >= len(payload[7])
        assert sum(big) < sum(map(len, payload.values())) + 200  # each carries one message (and its frame head)


async def test_a_lost_packet_on_one_stream_does_not_hold_up_another(engine: str) -> None:
    """The datagrams carrying a message on stream 0 are lost; a message sent right after on stream 1 is delivered
    at once, before QUIC has even noticed the loss; then the lost message arrives too, and the connection goes on.
    Over one shared QUIC stream (the previous design) the second message would have waited for the first."""
    async with local_network(2, transport="quic", transport_options={"quic": {"engine": engine}}) as (a, b):
        async with asyncio.timeout(TIMEOUT):
            await a.send(1, b"warm up", stream=0)  # both streams opened, and their credit settled
            await a.send(1, b"warm up", stream=1)
            assert await b.receive_from(0, stream=0) == b"warm up"
            assert await b.receive_from(0, stream=1) == b"warm up"
        sender = quic_pipe(a, 1)
        socket = DroppingSocket(sender._protocol._transport)
        sender._protocol._transport = cast(Any, socket)
        arrived = b.connection(0).stats.messages_received

        socket.dropping = True
        await a.send(1, b"first, lost on the way", stream=0)
        async with asyncio.timeout(TIMEOUT):
            await socket.dropped.wait()  # core's flush went out, into the void
        socket.dropping = False
        await a.send(1, b"second, on another stream", stream=1)
        async with asyncio.timeout(TIMEOUT):
            assert await b.receive_from(0, stream=1) == b"second, on another stream"
        # Only the second one has arrived: the first is still missing (QUIC retransmits it only once b acknowledges
        # a later packet, which is after this delivery).
        assert b.connection(0).stats.messages_received == arrived + 1
        async with asyncio.timeout(TIMEOUT):
            assert await b.receive_from(0, stream=0) == b"first, lost on the way"
            await a.send(1, b"and on", stream=0)
            assert await b.receive_from(0, stream=0) == b"and on"
            await b.send(0, b"and back", stream=1)
            assert await a.receive_from(1, stream=1) == b"and back"


async def test_each_side_writes_on_the_quic_streams_the_other_opened(engine: str) -> None:
    """Both sides use stoffelnet streams 0 and 1: every QUIC stream of the connection then carries both directions
    (control, the two streams, credit), so the engine holds half as many streams as one per channel and direction,
    and each side's directions are distinct QUIC streams."""
    async with local_network(2, transport="quic", transport_options={"quic": {"engine": engine}}) as (a, b):
        async with asyncio.timeout(TIMEOUT):
            for stream in (0, 1):
                await a.send(1, b"ping", stream=stream)
                assert await b.receive_from(0, stream=stream) == b"ping"
                await b.send(0, b"pong", stream=stream)
                assert await a.receive_from(1, stream=stream) == b"pong"
        ours, theirs = quic_pipe(a, 1), quic_pipe(b, 0)
        assert len(set(ours._streams)) == len(ours._streams) >= 3  # control and two streams (and credit, if sent)
        assert len(set(theirs._streams)) == len(theirs._streams) >= 3
        shared = set(ours._streams) & set(theirs._streams)
        opened = set(ours._streams) | set(theirs._streams)
        assert len(shared) >= len(opened) - 1, f"dialer writes on {ours._streams}, acceptor on {theirs._streams}"
        assert set(ours._peer) == set(theirs._streams)
        assert set(theirs._peer) == set(ours._streams)


async def test_a_unidirectional_quic_stream_is_a_protocol_violation(victim: Victim) -> None:
    """Nothing in this protocol opens a unidirectional QUIC stream: a peer that does (here before any handshake) is
    cut off with PROTOCOL_VIOLATION, and every other connection goes on."""

    def uni(quic: Any, stream_id: int) -> None:
        quic.send_stream_data(quic.get_next_available_stream_id(is_unidirectional=True), b"\x00" * 16)

    await _cut_off(victim, uni, "unexpected QUIC stream")


async def _cut_off(victim: Victim, act: Callable[[Any, int], None], reason: str) -> None:
    """A raw peer opens a stream, writes a byte on it, then does `act(quic, stream_id)`: the party closes the
    connection with PROTOCOL_VIOLATION naming `reason`, and every other connection goes on."""
    peer = await RawQuicPeer.connect(victim.address(1), victim.client_tls(SPARE_CLIENT), ALPN_CLIENT)
    quic = peer.protocol._quic
    stream_id = quic.get_next_available_stream_id()
    quic.send_stream_data(stream_id, b"\x00")
    act(quic, stream_id)
    peer.protocol.transmit()
    ended = await peer.expect_closed()
    assert ended is not None
    assert ended.error_code == 0x0A, ended
    assert reason in ended.reason_phrase
    await assert_unaffected(victim)


async def test_a_peer_that_resets_a_stream_is_cut_off(victim: Victim) -> None:
    """This protocol ends a stream only with a FIN: a RESET_STREAM would leave that direction unended forever (and a
    clean close waiting for it), so it is a protocol violation."""
    await _cut_off(victim, lambda quic, stream_id: quic.reset_stream(stream_id, 7), "StreamReset")


async def test_a_peer_that_stops_our_sending_is_cut_off(victim: Victim) -> None:
    """STOP_SENDING on a stream the party may write on (here the peer's own, whose direction back is the party's to
    take) is a protocol violation as well: the engine would refuse the party's next write on it."""
    await _cut_off(victim, lambda quic, stream_id: quic.stop_stream(stream_id, 7), "StopSendingReceived")


async def test_a_peer_that_opens_too_many_quic_streams_is_cut_off(
    victim: Victim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams that carry no whole prefix never reach core's own limit on streams: the pipe counts the peer's
    directions itself (here its limit lowered to 3, to reach it with a few streams)."""
    monkeypatch.setattr(quic_transport, "_MAX_PEER_STREAMS", 3)

    def more(quic: Any, stream_id: int) -> None:
        for _ in range(4):
            quic.send_stream_data(quic.get_next_available_stream_id(), b"\x00")

    await _cut_off(victim, more, "more than 3 QUIC streams")
