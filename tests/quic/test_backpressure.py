"""The QUIC stream's send buffer is bounded: a sender to a peer that stops reading stops at
``[transport_options.quic] send_buffer_bytes`` unsent bytes, on every engine.

Neither engine ever refuses a write (aioquic's and qh3's stream buffers grow without bound), so `QuicPipe` reads how
many bytes the stream holds unsent (`Engine.unsent`) and pauses core's writing above the limit. The peer here stops
reading its UDP socket (as a frozen process does): nothing is acknowledged, the engine sends what its congestion
window allows and keeps the rest unsent. Core's flow-control window is set far larger than the bound, so it is the
QUIC bound, not core's credit, that stops the sender. Every wait is bounded; "a send is blocked" is seen by a send
that has not returned after `BLOCKED_AFTER` seconds, as in the conformance suite.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stoffelnet_core.testing import local_network
from stoffelnet_quic.transport import QuicPipe

from .conftest import ENGINES, pipe_pair, quic_pipe

KIB = 1024
MIB = 1024 * KIB
LIMIT = 128 * KIB  # the QUIC bound under test
CORE_BUFFER = 256 * KIB  # core's own per-stream send buffer (what `send` may queue above the pipe)
WINDOW = 16 * MIB  # core's receive window: the credit a sender has; without the QUIC bound it would all pile up
SIZE = 16 * KIB
BLOCKED_AFTER = 0.5
TIMEOUT = 10.0

pytestmark = pytest.mark.parametrize("engine", ENGINES)


class Received:
    """A pipe receiver that counts the bytes that arrive."""

    def __init__(self) -> None:
        self.size = 0
        self.changed = asyncio.Event()

    def data_received(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self.changed.set()

    def stream_data_received(self, index: int, data: bytes | memoryview) -> None:
        self.data_received(data)

    def eof_received(self) -> None:
        """Not expected here."""

    def connection_lost(self, exc: BaseException | None) -> None:
        self.changed.set()

    def pause_writing(self) -> None:
        """This side writes nothing."""

    def resume_writing(self) -> None:
        """This side writes nothing."""

    async def at_least(self, size: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.size < size:
                self.changed.clear()
                await self.changed.wait()


def paused(pipe: QuicPipe) -> bool:
    """Whether `pipe` holds core's writing paused now."""
    return pipe.paused


async def test_the_engine_still_reports_a_streams_unsent_bytes(engine: str) -> None:
    """`Engine.unsent` reads aioquic's private stream sender (``_buffer_stop - highest_offset``) or qh3's
    ``get_send_buffer_size``: bytes written and not yet sent count, bytes sent do not. If an engine upgrade moves
    either, this fails (instead of the bound silently never pausing anyone)."""
    async with pipe_pair(engine, engine) as (pipe, other):
        received = Received()
        other.set_receiver(received)
        assert pipe.unsent() == 0
        pipe._quic.send_stream_data(pipe.stream_id(0), b"x" * 300_000)  # straight into the engine: nothing sent yet
        assert pipe.unsent() == 300_000
        pipe._protocol.transmit()
        await received.at_least(1)
        assert pipe.unsent() < 300_000  # what left no longer counts...
        await received.at_least(300_000)
        assert pipe.unsent() == 0  # ...down to nothing once all of it left


async def test_a_sender_to_a_peer_that_stops_reading_stays_within_the_bound(engine: str) -> None:
    """The sender floods a peer whose socket is not read: `send` blocks with at most `LIMIT` unsent bytes in the
    QUIC stream (without the bound: up to the 16 MiB window), the pipe has paused core; once the peer reads again,
    every message arrives in order and core writes again."""
    quic = {"engine": engine, "send_buffer_bytes": LIMIT, "max_stream_data": 32 * MIB, "max_data": 64 * MIB}
    async with local_network(
        2,
        transport="quic",
        receive_window_bytes=WINDOW,
        send_buffer_bytes=CORE_BUFFER,
        transport_options={"quic": quic},
    ) as lan:
        a, b = lan
        # One round trip first: b's first read grants a the whole window (core starts every stream at 64 KiB of
        # credit), and b's reply comes after that grant on the same QUIC stream.
        async with asyncio.timeout(TIMEOUT):
            await a.send(1, b"hello")
            assert await b.receive_from(0) == b"hello"
            await b.send(0, b"granted")
            assert await a.receive_from(1) == b"granted"
        sender = quic_pipe(a, 1)
        socket: Any = quic_pipe(b, 0)._protocol._transport  # asyncio's UDP transport (it can pause reading)
        socket.pause_reading()  # b is frozen: it neither reads nor acknowledges
        sent, most_unsent, blocked = 0, 0, False
        while sent * SIZE < WINDOW:
            try:
                async with asyncio.timeout(BLOCKED_AFTER):
                    await a.send(1, sent.to_bytes(4, "big") * (SIZE // 4))
            except TimeoutError:
                blocked = True
                break
            sent += 1
            most_unsent = max(most_unsent, sender.unsent())
        assert blocked, f"{sent * SIZE} bytes accepted for a peer that reads nothing, and send never blocked"
        most_unsent = max(most_unsent, sender.unsent())
        assert most_unsent <= LIMIT, f"{most_unsent} bytes unsent in the QUIC stream, bound {LIMIT}"
        assert paused(sender)
        assert sender.backlog() <= CORE_BUFFER + SIZE  # what one flush of core's handed over beyond the bound
        # Everything accepted sits in bounded places: core's buffer, the pipe's backlog, the QUIC stream (unsent, or
        # in flight within the engine's congestion window): far below the 16 MiB the window would allow.
        assert sent * SIZE <= 2 * MIB, f"{sent * SIZE} bytes accepted with nobody reading"

        socket.resume_reading()
        async with asyncio.timeout(TIMEOUT):
            for i in range(sent):
                data = await b.receive_from(0)
                assert data[:4] == i.to_bytes(4, "big"), f"message {i} lost or out of order"
                assert len(data) == SIZE
            await a.send(1, b"after")
            assert await b.receive_from(0) == b"after"
            await b.send(0, b"and back")
            assert await a.receive_from(1) == b"and back"
        assert not paused(sender)
        assert sender.backlog() == 0
