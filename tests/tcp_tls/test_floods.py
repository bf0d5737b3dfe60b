"""Slow-loris and connection floods against a party's tcp-tls listener, measured (issue "Nothing lost", "Hostile
peers").

- Slow-loris: hundreds of connections that never finish TLS (plain TCP that sends nothing, or half a ClientHello),
  or that finish TLS (with a pinned client key: mutual TLS lets nobody else through) and never send the Handshake
  envelope. Each is dropped after its timeout (the listener's ``handshake_timeout_ms``, shortened here; then
  core's ``timeout_ms``), and while they hang a legitimate client still connects and the parties still talk: the
  listener bounds the TLS handshakes in progress (``max_pending_handshakes``) by dropping the OLDEST to admit a
  newcomer, so silent connections cannot lock anyone out.
- Floods: hundreds of unauthenticated attempts in a burst (not TLS at all, TLS without a certificate, TLS with a
  key nobody pinned, a reset at once); afterwards this process, which runs the victim, holds exactly as many file
  descriptors as before and its resident memory is back within `RSS_MARGIN`.

Every other connection keeps working throughout. Every wait is bounded; descriptors and memory, which are released
without an event, are awaited by polling with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stoffelnet_core.config import TLSConfig
from stoffelnet_core.ids import Address
from stoffelnet_core.network import MAX_HANDSHAKING, Network
from stoffelnet_core.testing.hostile import (
    SPARE_CLIENT,
    TIMEOUT,
    LogWatch,
    Resources,
    TcpAttackers,
    Victim,
    assert_blocks_within,
    assert_rss_within,
    assert_unaffected,
    await_condition,
    await_fds,
    handshake_frame,
    healthy_meanwhile,
    log_records_as_text,
    make_identity,
    start_victim,
    tls_client_hello,
)
from stoffelnet_tcp_tls import transport as tcp_tls
from stoffelnet_tcp_tls.options import TcpTlsOptions

from .conftest import ALPN_CLIENT, ALPN_PARTY, client_context

TARGET = 1  # the attacked party: it dials party 2, accepts party 0 and the clients
HANDSHAKE_TIMEOUT = 2.0  # seconds: the listener's TLS handshake timeout here (the default is 10 s)
TIMEOUT_MS = 3000  # core's timeout_ms here: a connection that sent no Handshake by then is dropped
SLOW = 300  # slow-loris connections held at once: more than the listener's cap on handshakes in progress
FLOOD = 500  # unauthenticated connection attempts in one burst
CONCURRENT = 50  # of them in flight at once (below asyncio's listen backlog of 100: no SYN is dropped)
CAP = TcpTlsOptions().max_pending_handshakes


@pytest.fixture
async def victim(tmp_path: Path) -> AsyncIterator[Victim]:
    """The tcp-tls victim with short handshake timeouts, so a slow-loris is dropped within these tests' bounds."""
    options = {"tcp-tls": {"handshake_timeout_ms": int(HANDSHAKE_TIMEOUT * 1000)}}
    async with start_victim(tmp_path, "tcp-tls", transport_options=options, timeout_ms=TIMEOUT_MS) as v:
        yield v


@pytest.fixture(autouse=True)
def text_only_logs() -> Iterator[None]:
    """Log records keep their text, not the refused connection (see `log_records_as_text`)."""
    with log_records_as_text():
        yield


class Accepts:
    """TCP connections each listener accepted (handed to its TLS upgrade), by listening port."""

    def __init__(self) -> None:
        self.count: Counter[int] = Counter()
        self.changed = asyncio.Event()

    async def wait(self, port: int, n: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.count[port] < n:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def accepts(monkeypatch: pytest.MonkeyPatch) -> Accepts:
    counter = Accepts()
    original = tcp_tls._Accepting.connection_made

    def counted(self: tcp_tls._Accepting, transport: asyncio.BaseTransport) -> None:
        original(self, transport)
        counter.count[transport.get_extra_info("sockname")[1]] += 1
        counter.changed.set()

    monkeypatch.setattr(tcp_tls._Accepting, "connection_made", counted)
    return counter


def pending(net: Network) -> int:
    """TLS handshakes in progress at a party's listener."""
    listener = net._listener
    assert isinstance(listener, tcp_tls.TcpTlsListener)
    return len(listener._pending)


def held_for(attackers: TcpAttackers) -> list[float]:
    """How long the listener kept each connection open, in seconds."""
    return [attackers.ended[i] - opened for i, opened in enumerate(attackers.opened)]


async def test_slow_loris_before_tls_is_dropped_and_never_locks_the_listener_out(
    victim: Victim, accepts: Accepts, logwatch: LogWatch
) -> None:
    """300 connections that never finish TLS (150 silent, 150 with half a ClientHello). The listener holds at most
    its cap (256) of them, dropping the oldest to admit newer ones; while the rest hang, a fresh client connects
    and every link works; each is dropped after the handshake timeout; descriptors and memory come back."""
    party, address = victim.parties[TARGET], victim.address(TARGET)
    loop = asyncio.get_running_loop()
    baseline = Resources.now()
    hello = tls_client_hello(ALPN_CLIENT)
    async with TcpAttackers(address) as attackers:
        await attackers.open(SLOW // 2)
        await attackers.open(SLOW - SLOW // 2, hello[: len(hello) // 2])
        await accepts.wait(address.port, SLOW)
        assert pending(party) == CAP
        await logwatch.wait_for("dropped the TLS handshake of", "the oldest of 256 in progress")

        started = loop.time()
        await assert_unaffected(victim)  # a fresh client's handshake with party 1 drops one more of the oldest
        assert loop.time() - started < HANDSHAKE_TIMEOUT
        assert attackers.open_count >= CAP - 1, "the slow-loris was dropped before the legitimate client came"

        await attackers.wait_ended(HANDSHAKE_TIMEOUT + TIMEOUT)
        held = held_for(attackers)
        dropped_early = [t for t in held if t < HANDSHAKE_TIMEOUT * 0.95]
        assert len(dropped_early) == SLOW - CAP + 1  # the oldest, each to admit a newer connection
        assert max(held) < HANDSHAKE_TIMEOUT + TIMEOUT
    await logwatch.wait_for("its TLS handshake did not complete in time")
    assert pending(party) == 0
    await await_fds(baseline.fds)
    await assert_rss_within(baseline.rss)
    await assert_blocks_within(baseline.blocks)
    assert party.clients() == [0]
    await assert_unaffected(victim)


async def test_tls_without_a_handshake_envelope_is_dropped_after_timeout_ms(victim: Victim, logwatch: LogWatch) -> None:
    """300 connections with a pinned client key that complete TLS, then send nothing (150) or half a Handshake
    frame (150): core holds at most `MAX_HANDSHAKING` (256) of them, dropping the oldest to admit newer ones, and
    drops each after `timeout_ms`; meanwhile a fresh client connects and every link works."""
    party, address = victim.parties[TARGET], victim.address(TARGET)
    loop = asyncio.get_running_loop()
    tls = victim.client_tls(SPARE_CLIENT)
    ctx = client_context(tls.cert, tls.key, victim.party_certs, ALPN_CLIENT)
    baseline = Resources.now()
    frame = handshake_frame("client", SPARE_CLIENT)
    async with TcpAttackers(address) as attackers:
        await attackers.open(SLOW // 2, tls=ctx)
        await attackers.open(SLOW - SLOW // 2, frame[: len(frame) // 2], tls=ctx)
        started = loop.time()
        await assert_unaffected(victim)
        assert loop.time() - started < TIMEOUT_MS / 1000
        assert attackers.open_count >= MAX_HANDSHAKING - 1, "more connections were dropped than the bound needs"

        await attackers.wait_ended(TIMEOUT_MS / 1000 + TIMEOUT)
        held = held_for(attackers)
        # The oldest were dropped, each to admit a newer one (and perhaps one more for the fresh client); only
        # those went before their timeout. (Counted in the log: how long they were held depends on how long
        # opening 300 took.)
        dropped = len(logwatch.matching("connections already awaiting their Handshake"))
        assert SLOW - MAX_HANDSHAKING <= dropped <= SLOW - MAX_HANDSHAKING + 2, dropped
        assert len([t for t in held if t < TIMEOUT_MS / 1000 * 0.95]) <= dropped
        assert max(held) < TIMEOUT_MS / 1000 + TIMEOUT
    await logwatch.wait_for("connections already awaiting their Handshake")
    await logwatch.wait_for("refused a connection from", "Timeout: handshake with", "timed out")
    await await_fds(baseline.fds)
    await assert_rss_within(baseline.rss)
    await assert_blocks_within(baseline.blocks)
    assert party.clients() == [0]
    await assert_unaffected(victim)


# -- floods -------------------------------------------------------------------------------------------------------
KINDS = ["not-tls", "tls-without-a-certificate", "tls-with-a-stranger-key", "reset-at-once", "half-a-hello-then-fin"]


async def flood_attempt(kind: str, address: Address, party_certs: list[Path], stranger: TLSConfig) -> None:
    """One unauthenticated connection attempt of `kind` at `address`, until the listener ended it (or it hung up
    itself). `stranger` is a key nobody pinned."""
    tls = None
    first = b""
    if kind == "not-tls":
        first = b"GET / HTTP/1.1\r\nHost: stoffelnet\r\n\r\n"
    elif kind == "tls-without-a-certificate":
        tls = client_context(None, None, party_certs, ALPN_PARTY)
    elif kind == "tls-with-a-stranger-key":
        tls = client_context(stranger.cert, stranger.key, party_certs, ALPN_PARTY)
    elif kind == "half-a-hello-then-fin":
        hello = tls_client_hello()
        first = hello[: len(hello) // 3]
    async with asyncio.timeout(TIMEOUT):
        try:
            reader, writer = await asyncio.open_connection(
                address.host, address.port, ssl=tls, server_hostname="stoffelnet" if tls is not None else None
            )
        except OSError:  # refused within the TLS handshake (ssl.SSLError is an OSError)
            return
        try:
            if kind == "reset-at-once":
                return
            writer.write(first)
            if kind == "half-a-hello-then-fin":
                writer.write_eof()
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass
        finally:
            writer.transport.abort()


async def test_connection_flood_leaves_no_descriptor_or_memory_behind(
    victim: Victim, logwatch: LogWatch, tmp_path: Path
) -> None:
    """500 unauthenticated attempts, 50 at a time, while broadcast rounds and client round trips run: each is
    refused; afterwards exactly the descriptors of before are open and resident memory is back within the margin."""
    party = victim.parties[TARGET]
    stranger = make_identity(tmp_path, "stranger")
    baseline = Resources.now()
    slots = asyncio.Semaphore(CONCURRENT)

    async def one(kind: str) -> None:
        async with slots:
            await flood_attempt(kind, victim.address(TARGET), victim.party_certs, stranger)

    kinds = list(itertools.islice(itertools.cycle(KINDS), FLOOD))
    async with healthy_meanwhile(victim) as rounds:
        await asyncio.gather(*(one(kind) for kind in kinds))
    assert rounds
    for reason in (
        "it does not speak TLS 1.3",
        "it presented no certificate",
        "its certificate is not pinned here",
        "it closed the connection during the TLS handshake",
    ):
        await logwatch.wait_for("AuthenticationError: refused a connection from", reason)
    await await_condition(lambda: pending(party) == 0, "TLS handshakes still in progress at party 1")
    await await_fds(baseline.fds)
    await assert_rss_within(baseline.rss)
    await assert_blocks_within(baseline.blocks)
    assert party.clients() == [0]
    await assert_unaffected(victim)
