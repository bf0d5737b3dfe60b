"""Hostile UDP traffic at a party's QUIC port: random datagrams, mutated real packets, a flood of fake Initials.

QUIC listens on an unconnected UDP socket: anyone can send it anything, from any address, before any handshake.
Each test sends a bounded, seeded batch to party 1's port on 127.0.0.1 while broadcast rounds and client round trips
run, and checks that the party does not crash (no exception reaches the event loop: the autouse `loop_errors`
fixture), that every existing connection keeps working during and after, and that the batch was really processed.

Every test runs once per engine (`ON_EVERY_ENGINE`): the attacked party runs aioquic, then qh3.

The party's UDP endpoint is instrumented (a tap on `_Endpoint.dispatch`, which hands one datagram to the engine's
server) to count what it processed:
asyncio reads one datagram per event-loop turn, so a sender that does not pace itself mostly fills the kernel's
socket buffer and measures nothing. Sends are paced to at most `WINDOW` datagrams not yet processed; one phase of the
flood blasts without pacing on purpose, and there only the mesh's health is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable

import attrs
import pytest
from aioquic.quic.connection import QuicConnection

from stoffelnet_core.ids import Address
from stoffelnet_core.network import Network, open_client
from stoffelnet_core.testing.hostile import HOST, SPARE_CLIENT, TIMEOUT, Victim, assert_healthy, assert_unaffected

from .conftest import ALPN_PARTY, ON_EVERY_ENGINE, client_configuration, half_open, quic_server

pytestmark = ON_EVERY_ENGINE

TARGET = 1  # the attacked party: it dials party 2, accepts party 0 and the clients
WINDOW = 16  # datagrams sent and not yet processed by the party (well inside a loopback socket buffer)
SEED = 20240531
QUIC_V1 = 1

AddressTuple = tuple[str, int]


# -- instrumentation ------------------------------------------------------------------------------------------------
class Tap:
    """Counts the datagrams the party's aioquic server processed, per source address."""

    def __init__(self) -> None:
        self.count: Counter[AddressTuple] = Counter()
        self.changed = asyncio.Event()


@pytest.fixture
def tap(victim: Victim, monkeypatch: pytest.MonkeyPatch) -> Tap:
    server = quic_server(victim.parties[TARGET])
    original = server.dispatch  # one call per datagram (datagram_received drains several per call)
    counter = Tap()

    def counted(data: bytes, addr: AddressTuple) -> None:
        try:
            original(data, addr)
        finally:
            counter.count[(addr[0], addr[1])] += 1
            counter.changed.set()

    monkeypatch.setattr(server, "dispatch", counted)
    return counter


class _Sink(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, AddressTuple], None] | None = None) -> None:
        self.on_datagram = on_datagram
        self.received = 0

    def datagram_received(self, data: bytes, addr: AddressTuple) -> None:
        self.received += 1
        if self.on_datagram is not None:
            self.on_datagram(data, addr)


class Source:
    """A UDP socket on 127.0.0.1 that sends to the party (what the party answers is read and dropped).

    It writes with the socket's own `sendto` (non-blocking), because asyncio's `DatagramTransport.sendto` silently
    drops empty datagrams, and an empty datagram is one of the inputs."""

    def __init__(self, sock: socket.socket, target: AddressTuple) -> None:
        self.sock = sock
        self.target = target
        self.address: AddressTuple = sock.getsockname()[:2]
        self.sent = 0

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.target)
        except BlockingIOError:
            return  # the socket buffer is full: this one is lost before it left (only in the unpaced blast)
        self.sent += 1


@contextlib.asynccontextmanager
async def udp_socket(on_datagram: Callable[[bytes, AddressTuple], None] | None = None) -> AsyncIterator[socket.socket]:
    """A non-blocking UDP socket on 127.0.0.1 whose incoming datagrams the event loop reads (into `on_datagram`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((HOST, 0))
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Sink(on_datagram), sock=sock)
    try:
        yield sock
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def source(target: Address) -> AsyncIterator[Source]:
    async with udp_socket() as sock:
        yield Source(sock, (target.host, target.port))


async def paced(src: Source, tap: Tap, datagrams: Iterable[bytes]) -> int:
    """Send every datagram, never more than `WINDOW` ahead of what the party processed; waits until it processed
    all of them (bounded). Returns how many were sent."""

    async def caught_up(lag: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while src.sent - tap.count[src.address] > lag:
                tap.changed.clear()
                await tap.changed.wait()

    for data in datagrams:
        src.send(data)
        if src.sent - tap.count[src.address] >= WINDOW:
            await caught_up(WINDOW // 2)
    await caught_up(0)
    return src.sent


@contextlib.asynccontextmanager
async def rounds_meanwhile(v: Victim) -> AsyncIterator[list[float]]:
    """Broadcast rounds and client round trips, back to back, while the block runs; yields their durations (s).
    A round that fails or takes longer than TIMEOUT fails the test; at least one round must complete during it."""
    durations: list[float] = []
    stop = asyncio.Event()
    one_done = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await assert_healthy(v)
            durations.append(time.perf_counter() - started)
            one_done.set()

    task = asyncio.create_task(loop())
    try:
        yield durations
        async with asyncio.timeout(TIMEOUT):  # the attack was quicker than one round: let that round finish
            await asyncio.wait([task, asyncio.ensure_future(one_done.wait())], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        async with asyncio.timeout(2 * TIMEOUT):
            await task  # re-raises a failed round
    assert durations, "no round completed during the attack"


# -- packet makers --------------------------------------------------------------------------------------------------
def long_header(rng: random.Random, *, kind: int = 0, version: int = QUIC_V1, size: int = 1200) -> bytes:
    """A long-header packet (kind 0: Initial) with random connection ids and a random (undecryptable) payload,
    padded to `size` bytes: parses as QUIC, so a server must look at it."""
    dcid, scid = rng.randbytes(rng.randint(8, 20)), rng.randbytes(rng.randint(0, 20))
    head = bytes([0xC0 | kind << 4 | rng.randint(0, 3)]) + version.to_bytes(4, "big")
    head += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    if kind == 0:
        head += b"\x00"  # no token
    rest = max(size - len(head) - 2, 20)
    return head + (0x4000 | rest).to_bytes(2, "big") + rng.randbytes(rest)  # a 2-byte varint length


def random_datagram(rng: random.Random) -> bytes:
    """0..1500 bytes: pure noise, or noise dressed as a QUIC long or short header packet."""
    size = rng.randint(0, 1500)
    style = rng.random()
    if style < 0.4 or size < 8:
        return rng.randbytes(size)
    if style < 0.8:
        version = rng.choice([QUIC_V1, QUIC_V1, 0, 0x6B3343CF, rng.getrandbits(32)])
        return long_header(rng, kind=rng.randint(0, 3), version=version, size=size)[: max(size, 8)]
    return bytes([0x40 | rng.getrandbits(6)]) + rng.randbytes(size - 1)  # short header, unknown connection id


def genuine_initials(target: AddressTuple, count: int, now: float) -> list[bytes]:
    """The first flight of `count` fresh aioquic clients: valid Initials with full ClientHellos, as a real dialer
    sends them. A server must run the TLS handshake for each (key exchange and a signature)."""
    out: list[bytes] = []
    for _ in range(count):
        connection = QuicConnection(configuration=client_configuration(None, ALPN_PARTY))
        connection.connect(target, now=now)
        out += [data for data, _ in connection.datagrams_to_send(now=now)]
    return out


def mutations(packet: bytes, rng: random.Random) -> list[bytes]:
    """Truncations, bit flips, rewritten header fields, duplication and padding of one captured datagram."""
    n = len(packet)
    cuts = {0, 1, 5, 6, 7, 20, n - 17, n - 16, n - 1} | {n * k // 16 for k in range(1, 16)}
    out = [packet[:cut] for cut in sorted(cuts) if 0 <= cut < n]
    for limit in (n, min(n, 48)):  # anywhere, and in the header (connection ids, lengths, packet number)
        for _ in range(40):
            flipped = bytearray(packet)
            flipped[rng.randrange(limit)] ^= 1 << rng.randrange(8)
            out.append(bytes(flipped))
    for first in (packet[0] ^ 0x80, packet[0] ^ 0x40, packet[0] ^ 0x30, packet[0] | 0x0C, 0xFF, 0x00):
        out.append(bytes([first]) + packet[1:])
    if packet[0] & 0x80:  # long header: version, connection id lengths
        for version in (0, 0xFFFFFFFF, 0x1A2A3A4A, 2):
            out.append(packet[:1] + version.to_bytes(4, "big") + packet[5:])
        for cid_length in (0, 21, 255):
            out.append(packet[:5] + bytes([cid_length]) + packet[6:])
    out.append(packet + packet)  # two copies coalesced in one datagram
    out.append(packet + rng.randbytes(64))
    out.append(packet)  # a plain replay
    return out


# -- a UDP relay that captures a real connection ---------------------------------------------------------------------
class Relay:
    """Sits in front of the party: forwards both ways and records every datagram the dialer sent. Its back socket
    is the live connection's address as the party sees it, so what is injected there comes from that path."""

    def __init__(self, party: Address) -> None:
        self.party = (party.host, party.port)
        self.captured: list[bytes] = []
        self.dialer: AddressTuple | None = None
        self.front: socket.socket | None = None
        self.back: Source | None = None

    def _from_dialer(self, data: bytes, addr: AddressTuple) -> None:
        self.dialer = addr
        self.captured.append(data)
        assert self.back is not None
        self.back.send(data)

    def _from_party(self, data: bytes, addr: AddressTuple) -> None:
        if self.dialer is not None and self.front is not None:
            with contextlib.suppress(BlockingIOError):
                self.front.sendto(data, self.dialer)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Address]:
        async with udp_socket(self._from_dialer) as front, udp_socket(self._from_party) as back:
            self.front = front
            self.back = Source(back, self.party)
            yield Address(HOST, front.getsockname()[1])


def _party_network(v: Victim) -> Network:
    return v.parties[TARGET]


# -- the tests ------------------------------------------------------------------------------------------------------
async def test_random_datagrams_do_not_disturb_a_party(victim: Victim, tap: Tap) -> None:
    """3000 seeded random datagrams of 0..1500 bytes (noise, and noise dressed as QUIC): all processed, no crash,
    every connection working during and after."""
    rng = random.Random(SEED)
    datagrams = [random_datagram(rng) for _ in range(3000)]
    started = time.perf_counter()
    async with source(victim.address(TARGET)) as src, rounds_meanwhile(victim):
        assert await paced(src, tap, datagrams) == len(datagrams)
        processed = tap.count[src.address]
    assert processed == len(datagrams)
    assert time.perf_counter() - started < 3 * TIMEOUT
    await assert_unaffected(victim)


async def test_mutated_real_packets_do_not_disturb_a_party(victim: Victim, tap: Tap) -> None:
    """A real client connection to party 1 runs through a relay that captures its datagrams (its Initials with the
    ClientHello, Handshake and 1-RTT packets). Truncated, bit-flipped, rewritten, duplicated and replayed copies are
    sent to the party from a stranger's socket and from the live connection's own address: no crash, the captured
    connection itself and the rest of the mesh keep working."""
    relay = Relay(victim.address(TARGET))
    rng = random.Random(SEED)
    async with relay.running() as front:
        config = victim.client_config(SPARE_CLIENT)
        parties = tuple(attrs.evolve(n, address=front) if n.id == TARGET else n for n in config.parties)
        # MTU-sized datagrams: the relay drops what its socket cannot take at once, and big ones fill it fastest.
        relayed = attrs.evolve(config, parties=parties, transport_options={"quic": {"max_datagram_size": 1200}})
        async with asyncio.timeout(TIMEOUT), open_client(relayed) as captured_client:
            await captured_client.send(TARGET, b"through the relay")
            assert await _party_network(victim).receive_from_client(SPARE_CLIENT, timeout=TIMEOUT) == (
                SPARE_CLIENT,
                b"through the relay",
            )
            captured = list(relay.captured)
            assert captured[0][0] & 0xF0 == 0xC0, "the first datagram is not an Initial"
            assert len(captured[0]) >= 1200
            assert any(not d[0] & 0x80 for d in captured), "no 1-RTT packet was captured"
            hostile = [m for packet in captured for m in mutations(packet, rng)]
            assert relay.back is not None
            async with source(victim.address(TARGET)) as stranger, rounds_meanwhile(victim):
                await paced(stranger, tap, hostile)
                await paced(relay.back, tap, hostile)
            # the captured connection, whose own packets were mangled and replayed on its own path, still works
            for i in range(3):
                await captured_client.send(TARGET, b"after %d" % i)
                assert await _party_network(victim).receive_from_client(SPARE_CLIENT, timeout=TIMEOUT) == (
                    SPARE_CLIENT,
                    b"after %d" % i,
                )
                await _party_network(victim).send_to_client(SPARE_CLIENT, b"reply %d" % i)
                assert await captured_client.receive_from(TARGET, timeout=TIMEOUT) == b"reply %d" % i
    await assert_unaffected(victim)


async def test_fake_initial_flood_does_not_disturb_a_party(victim: Victim, tap: Tap) -> None:
    """2000 Initials with random connection ids and undecryptable payloads, 150 genuine ClientHello Initials (each a
    full TLS handshake for the party), then an unpaced blast of 1000 more: the mesh keeps working throughout."""
    rng = random.Random(SEED)
    party = victim.address(TARGET)
    target = (party.host, party.port)
    garbage = [long_header(rng) for _ in range(2000)]
    hellos = genuine_initials(target, 150, asyncio.get_running_loop().time())
    started = time.perf_counter()
    async with source(party) as src, rounds_meanwhile(victim) as rounds:
        await paced(src, tap, garbage)
        await paced(src, tap, hellos)
        for data in (long_header(rng) for _ in range(1000)):
            src.send(data)  # as fast as the socket takes them: most are dropped by the kernel
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    assert tap.count[src.address] >= len(garbage) + len(hellos)
    assert elapsed < 4 * TIMEOUT
    assert rounds
    await assert_unaffected(victim)


async def test_spoofed_initials_do_not_pile_up_half_open_connections(victim: Victim, tap: Tap) -> None:
    """Expected: the listener bounds the QUIC connections whose handshake never completed, as tcp-tls bounds its TLS
    handshakes (at most 256 pending). Got: one per fake Initial, each kept until the idle timeout."""
    rng = random.Random(SEED)
    async with source(victim.address(TARGET)) as src:
        await paced(src, tap, (long_header(rng) for _ in range(600)))
    assert half_open(_party_network(victim)) <= 256, f"{half_open(_party_network(victim))} half-open connections"
