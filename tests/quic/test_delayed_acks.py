"""Delayed acknowledgements (`_Protocol.count_acks`): sparse traffic is acknowledged ``ack_delay_ms`` after it
arrives (mostly by a data packet built once it is due, rather than by an ACK-only packet every millisecond); two
full-sized datagrams make it due at the engine's own pace (1 ms), so a bulk sender's congestion window grows as
before; and a message nobody answers is still acknowledged, within the delay.

aioquic only: the delay goes through its private ``_ack_delay`` and the 1-RTT space's ``ack_at`` (pinned here); qh3
acknowledges in its compiled core.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aioquic.tls import Epoch

from stoffelnet_core.testing import local_network
from stoffelnet_quic.transport import _Protocol

from .conftest import quic_protocol

TIMEOUT = 10.0
DELAY_MS = 5  # the default


def record_due(p: _Protocol) -> list[tuple[int, float]]:
    """After each arrival at `p` that leaves an acknowledgement pending: (full-sized datagrams since it became
    pending, seconds from then until it is due)."""
    seen: list[tuple[int, float]] = []
    original = p.count_acks

    def recorded(acks: Any, waiting: bool, full: int, now: float) -> None:
        original(acks, waiting, full, now)
        if acks.ack_at is not None:
            seen.append((p._ack_full, acks.ack_at - p._ack_since))

    p.count_acks = recorded  # type: ignore[method-assign]
    return seen


async def test_the_engine_exposes_what_delayed_acks_use() -> None:
    """The private state `Engine.delay_acks` relies on is where it was (an aioquic upgrade that moves it fails here,
    instead of silently acknowledging at the engine's pace); the option's default reaches the engine."""
    async with local_network(2, transport="quic") as (a, b):
        for p in (quic_protocol(a, 1), quic_protocol(b, 0)):
            assert p.acks is not None
            assert p.acks is p.quic._spaces[Epoch.ONE_RTT]
            assert p.quic._ack_delay == DELAY_MS / 1000


async def test_sparse_traffic_is_acknowledged_after_the_delay_bulk_at_the_engines_pace() -> None:
    """A small message leaves the receiver's ACK due `DELAY_MS` after it arrived; a 256 KiB one (datagrams of up
    to 16 KiB) makes it due 1 ms after the first of them once two have arrived, as the engine itself would."""
    async with local_network(2, transport="quic") as (a, b):
        seen = record_due(quic_protocol(b, 0))
        async with asyncio.timeout(TIMEOUT):
            await a.send(1, b"small")
            assert await b.receive_from(0) == b"small"
        assert seen, "no acknowledgement was pending after the message arrived"
        full, due = seen[0]
        assert full == 0
        assert due == pytest.approx(DELAY_MS / 1000)
        seen.clear()
        async with asyncio.timeout(TIMEOUT):
            await a.send(1, b"x" * 262144)  # 17 datagrams: many chances for two before the ACK goes
            assert await b.receive_from(0) == b"x" * 262144
        bulk = [due for full, due in seen if full >= 2]
        assert bulk, f"never two full-sized datagrams pending: {seen}"
        assert all(due == pytest.approx(0.001) for due in bulk), seen


async def test_a_message_nobody_answers_is_acknowledged_within_the_delay() -> None:
    """Nothing goes back from the receiver: its ACK of the packet that carried the message still comes, alone, once
    the delay has passed (not at the engine's 1 ms), and within a bound."""
    async with local_network(2, transport="quic") as (a, b):
        sender = quic_protocol(a, 1)
        space = sender.acks  # the sender's 1-RTT space: what it sent, and the largest packet number acknowledged
        loop = asyncio.get_running_loop()
        acknowledged = asyncio.Event()
        target = [1 << 62]
        original = sender.datagram_received

        def watched(data: bytes | str, addr: Any) -> None:
            original(data, addr)
            if space.largest_acked_packet >= target[0]:
                acknowledged.set()

        sender.datagram_received = watched  # type: ignore[method-assign]
        async with asyncio.timeout(TIMEOUT):
            await b.send(0, b"settle")
            assert await a.receive_from(1) == b"settle"
            await a.send(1, b"ping")
            started = loop.time()
            assert await b.receive_from(0) == b"ping"
            target[0] = max(space.sent_packets)  # the packet that carried it (or a later one)
            await asyncio.wait_for(acknowledged.wait(), 1.0)
        elapsed = loop.time() - started
        assert elapsed >= DELAY_MS / 1000 * 0.9, f"acknowledged after {elapsed * 1000:.1f} ms: not delayed"
        assert elapsed < 0.5, f"acknowledged only after {elapsed * 1000:.1f} ms"  # bounded, even on a loaded machine


async def test_ack_delay_of_one_ms_leaves_the_engine_its_own_pace() -> None:
    async with local_network(2, transport="quic", transport_options={"quic": {"ack_delay_ms": 1}}) as (a, b):
        for p in (quic_protocol(a, 1), quic_protocol(b, 0)):
            assert p.acks is None
            assert p.quic._ack_delay == 0.001


async def test_qh3_acknowledges_as_it_sees_fit() -> None:
    pytest.importorskip("qh3")
    async with local_network(2, transport="quic", transport_options={"quic": {"engine": "qh3"}}) as (a, b):
        assert quic_protocol(a, 1).acks is None
        assert quic_protocol(b, 0).acks is None
        await a.send(1, b"still works")
        assert await b.receive_from(0, timeout=TIMEOUT) == b"still works"
