"""The chaos proxies themselves, against plain asyncio servers on 127.0.0.1, and one network through them.

Every wait is bounded (`TIMEOUT`); nothing sleeps to synchronise: tests wait on events, on the servers' counts
or on the proxy's stats (`proxy.wait_for`). The only timed waits check that something does *not* happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import cast

import pytest

from stoffelnet_core import config as sn_config
from stoffelnet_core.ids import Address
from stoffelnet_core.network import Network
from stoffelnet_core.testing.chaos import (
    HOST,
    TcpChaosProxy,
    TcpPlan,
    UdpChaosProxy,
    UdpPlan,
    UdpStats,
    chaos_network,
    chaos_proxies,
    network_configs,
    route_through,
    tcp_proxy,
    udp_proxy,
)

TIMEOUT = 5.0


# -- plain servers -----------------------------------------------------------------------------------------------
class Conn(asyncio.Protocol):
    """A server-side connection that records what arrives and how it ended; echoes when `echo`."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.data = bytearray()
        self.chunks: list[int] = []
        self.eof = False
        self.error: Exception | None = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.chunks.append(len(data))
        self._changed.set()
        if self.echo:
            assert self.transport is not None
            self.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = exc
        self.ended.set()
        self._changed.set()

    async def until(self, size: int) -> None:
        """Wait until `size` bytes arrived."""
        while len(self.data) < size:
            if self.ended.is_set():
                raise AssertionError(f"connection ended after {len(self.data)} of {size} bytes")
            self._changed.clear()
            await self._changed.wait()


class Server:
    """A TCP server on 127.0.0.1 whose connections are `Conn`s, handed out in order by `next()`."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.conns: asyncio.Queue[Conn] = asyncio.Queue()
        self.accepted = 0
        self.address = Address(HOST, 0)

    def _make(self) -> Conn:
        self.accepted += 1
        conn = Conn(self.echo)
        self.conns.put_nowait(conn)
        return conn

    async def next(self) -> Conn:
        return await asyncio.wait_for(self.conns.get(), TIMEOUT)


@contextlib.asynccontextmanager
async def serve(echo: bool) -> AsyncIterator[Server]:
    server = Server(echo)
    listener = await asyncio.get_running_loop().create_server(server._make, HOST, 0)
    server.address = Address(HOST, listener.sockets[0].getsockname()[1])
    try:
        yield server
    finally:
        listener.close()


async def connect(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(address.host, address.port), TIMEOUT)


async def read_until_end(reader: asyncio.StreamReader) -> tuple[bytes, type[BaseException] | None]:
    """What arrives until the connection ends, and how it ended (None: a clean EOF)."""
    got = bytearray()
    try:
        while chunk := await reader.read(65536):
            got += chunk
    except ConnectionError as exc:
        return bytes(got), type(exc)
    return bytes(got), None


async def write_until_cut(writer: asyncio.StreamWriter, limit: int, chunk: int = 4096) -> int:
    """Write up to `limit` bytes, stopping quietly when the connection breaks; returns how many were written."""
    written = 0
    with contextlib.suppress(ConnectionError):
        while written < limit:
            writer.write(b"\xab" * chunk)
            await writer.drain()
            written += chunk
    return written


def close(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()


# -- TCP ---------------------------------------------------------------------------------------------------------
async def test_bytes_pass_intact_through_a_faithful_proxy() -> None:
    rng = random.Random(1)
    big = rng.randbytes(4 << 20)
    small = [rng.randbytes(rng.randint(1, 200)) for _ in range(2000)]
    async with serve(echo=True) as server, tcp_proxy(server.address) as proxy, asyncio.timeout(TIMEOUT):
        reader, writer = await connect(proxy.address)
        echoed = asyncio.create_task(reader.readexactly(len(big)))
        writer.write(big)
        await writer.drain()
        assert await echoed == big
        expected = b"".join(small)
        echoed = asyncio.create_task(reader.readexactly(len(expected)))
        for i, piece in enumerate(small):
            writer.write(piece)
            if i % 50 == 0:
                await writer.drain()
        assert await echoed == expected
        writer.close()
        stats = await proxy.wait_for(lambda s: s.active == 0)
    assert stats.bytes_to_target == stats.bytes_from_target == len(big) + len(expected)
    assert (stats.accepted, stats.cuts, stats.cut_points) == (1, 0, (None,))


async def test_a_half_close_is_forwarded_and_the_rest_still_flows() -> None:
    async with serve(echo=True) as server, tcp_proxy(server.address) as proxy, asyncio.timeout(TIMEOUT):
        reader, writer = await connect(proxy.address)
        writer.write(b"last words")
        writer.write_eof()
        assert await read_until_end(reader) == (b"last words", None)
        conn = await server.next()
        assert conn.eof
        writer.close()
        await proxy.wait_for(lambda s: s.active == 0)


@pytest.mark.parametrize(("mode", "ending"), [("abort", ConnectionResetError), ("close", None)])
async def test_a_cut_comes_near_the_byte_count_and_both_ends_see_it(
    mode: str, ending: type[BaseException] | None
) -> None:
    plan = TcpPlan(cut_after_bytes=100_000, jitter=0.5, cut_mode="abort" if mode == "abort" else "close")
    async with serve(echo=False) as server, tcp_proxy(server.address, plan, seed=5) as proxy:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await connect(proxy.address)
            writing = asyncio.create_task(write_until_cut(writer, 1 << 20))
            got, how = await read_until_end(reader)
            conn = await server.next()
            await conn.ended.wait()
            await writing
        close(writer)
    stats = proxy.stats
    (point,) = stats.cut_points
    assert point is not None
    assert 50_000 <= point <= 150_000
    assert stats.cuts == 1
    assert stats.bytes_to_target == point  # the cut falls exactly on the drawn byte
    assert len(conn.data) <= point
    assert (got, how) == (b"", ending)
    if mode == "abort":
        assert isinstance(conn.error, ConnectionResetError)  # an RST, not a FIN
    else:
        assert conn.eof
        assert conn.error is None
        assert bytes(conn.data) == b"\xab" * point  # a clean end loses nothing that went through


async def _cut_points(seed: int, connections: int = 5) -> tuple[int | None, ...]:
    plan = TcpPlan(cut_after_bytes=20_000, jitter=0.5)
    async with serve(echo=False) as server, tcp_proxy(server.address, plan, seed=seed) as proxy:
        for _ in range(connections):  # one after the other: the draws happen in order of acceptance
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await connect(proxy.address)
                writing = asyncio.create_task(write_until_cut(writer, 1 << 20))
                assert (await read_until_end(reader))[1] is ConnectionResetError
                await writing
                close(writer)
        stats = await proxy.wait_for(lambda s: s.active == 0)
        assert stats.cuts == connections
        return stats.cut_points


async def test_every_connection_gets_its_own_cut_point_and_a_seed_replays_them() -> None:
    first = await _cut_points(seed=42)
    assert all(p is not None and 10_000 <= p <= 30_000 for p in first)
    assert len(set(first)) == len(first)  # each connection has its own
    assert await _cut_points(seed=42) == first
    assert await _cut_points(seed=43) != first


async def test_max_cuts_limits_the_cuts_then_the_proxy_is_faithful() -> None:
    plan = TcpPlan(cut_after_bytes=1000, jitter=0.0, max_cuts=2)
    async with serve(echo=True) as server, tcp_proxy(server.address, plan) as proxy, asyncio.timeout(TIMEOUT):
        for _ in range(2):
            reader, writer = await connect(proxy.address)
            writer.write(bytes(5000))
            got, how = await read_until_end(reader)
            assert how is ConnectionResetError
            assert len(got) <= 1000
            close(writer)
        reader, writer = await connect(proxy.address)
        data = os.urandom(50_000)
        writer.write(data)
        assert await reader.readexactly(len(data)) == data
        close(writer)
        assert proxy.stats.cuts == 2


async def test_a_cut_after_a_time_ends_an_idle_connection() -> None:
    plan = TcpPlan(cut_after_seconds=0.2, jitter=0.0)
    async with serve(echo=True) as server, tcp_proxy(server.address, plan) as proxy, asyncio.timeout(TIMEOUT):
        started = time.monotonic()
        reader, writer = await connect(proxy.address)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        assert await read_until_end(reader) == (b"", ConnectionResetError)
        assert time.monotonic() - started >= 0.19
        conn = await server.next()
        await conn.ended.wait()
        close(writer)
        assert proxy.stats.cuts == 1


async def test_a_stall_holds_everything_then_resumes_without_loss() -> None:
    plan = TcpPlan(stall_at_bytes=50_000, stall_seconds=0.3)
    data = os.urandom(300_000)
    async with serve(echo=True) as server, tcp_proxy(server.address, plan) as proxy, asyncio.timeout(TIMEOUT):
        reader, writer = await connect(proxy.address)
        started = time.monotonic()
        echoed = asyncio.create_task(reader.readexactly(len(data)))
        writer.write(data)
        await proxy.wait_for(lambda s: s.stalls == 1)
        stalled_at = proxy.stats.bytes_to_target + proxy.stats.bytes_from_target
        assert stalled_at == 50_000  # both directions together, exactly at the byte point
        assert await echoed == data
        assert time.monotonic() - started >= 0.29
        close(writer)


async def test_pause_forwards_nothing_until_resume() -> None:
    async with serve(echo=False) as server, tcp_proxy(server.address) as proxy, asyncio.timeout(TIMEOUT):
        _, writer = await connect(proxy.address)
        conn = await server.next()  # the proxy connected through
        proxy.pause()
        writer.write(b"x" * 1000)
        with pytest.raises(TimeoutError):  # checks an absence: bounded, not a synchronisation
            await asyncio.wait_for(conn.until(1), 0.2)
        assert proxy.stats.bytes_to_target == 0
        proxy.resume()
        await conn.until(1000)
        assert bytes(conn.data) == b"x" * 1000
        close(writer)


async def test_trickle_forwards_small_chunks_with_delays() -> None:
    plan = TcpPlan(trickle_bytes=100, trickle_delay=0.01)
    data = os.urandom(1000)
    async with serve(echo=False) as server, tcp_proxy(server.address, plan) as proxy, asyncio.timeout(TIMEOUT):
        _, writer = await connect(proxy.address)
        started = time.monotonic()
        writer.write(data)
        conn = await server.next()
        await conn.until(len(data))
        assert bytes(conn.data) == data
        assert max(conn.chunks) <= 100
        assert len(conn.chunks) >= 10
        assert time.monotonic() - started >= 0.09
        close(writer)


async def test_refuse_drops_new_connections_as_if_the_party_were_down() -> None:
    async with serve(echo=True) as server, tcp_proxy(server.address) as proxy, asyncio.timeout(TIMEOUT):
        open_reader, open_writer = await connect(proxy.address)  # opened before: left alone
        proxy.refuse(True)
        reader, writer = await connect(proxy.address)
        assert await read_until_end(reader) == (b"", ConnectionResetError)
        close(writer)
        assert (proxy.stats.refused, server.accepted) == (1, 1)
        open_writer.write(b"still here")
        assert await open_reader.readexactly(10) == b"still here"
        proxy.refuse(False)
        reader, writer = await connect(proxy.address)
        writer.write(b"back")
        assert await reader.readexactly(4) == b"back"
        close(writer)
        close(open_writer)


async def test_cut_all_ends_every_connection_and_new_ones_work() -> None:
    async with serve(echo=True) as server, tcp_proxy(server.address) as proxy, asyncio.timeout(TIMEOUT):
        pairs = [await connect(proxy.address) for _ in range(3)]
        await proxy.wait_for(lambda s: s.active == 3)
        conns = [await server.next() for _ in range(3)]
        assert proxy.cut_all() == 3
        for reader, writer in pairs:
            assert await read_until_end(reader) == (b"", ConnectionResetError)
            close(writer)
        for conn in conns:
            await conn.ended.wait()
        assert (proxy.stats.cuts, proxy.stats.active) == (3, 0)
        reader, writer = await connect(proxy.address)
        writer.write(b"again")
        assert await reader.readexactly(5) == b"again"
        close(writer)


async def test_an_unreachable_target_ends_the_connection() -> None:
    async with serve(echo=True) as server:
        gone = server.address  # closed on exit: nothing listens there any more
    async with tcp_proxy(gone) as proxy, asyncio.timeout(TIMEOUT):
        reader, writer = await connect(proxy.address)
        assert (await read_until_end(reader))[0] == b""
        close(writer)
        await proxy.wait_for(lambda s: s.failed == 1 and s.active == 0)


# -- UDP ---------------------------------------------------------------------------------------------------------
class Datagrams(asyncio.DatagramProtocol):
    """Records datagrams (numbered by their first 4 bytes); echoes them to their sender when `echo`."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self._changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # asyncio's own is not a subclass of it

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.received.append(data)
        self._changed.set()
        if self.echo:
            assert self.transport is not None
            self.transport.sendto(data, addr)

    @property
    def numbers(self) -> list[int]:
        return [struct.unpack_from("!I", d)[0] for d in self.received]

    async def until(self, count: int) -> None:
        while len(self.received) < count:
            self._changed.clear()
            await self._changed.wait()


@contextlib.asynccontextmanager
async def udp_endpoint(
    echo: bool = False, remote: Address | None = None
) -> AsyncIterator[tuple[Datagrams, asyncio.DatagramTransport, Address]]:
    """A datagram socket on 127.0.0.1 (connected to `remote` when given), its recorder and its address."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Datagrams(echo),
        local_addr=(HOST, 0),
        remote_addr=None if remote is None else (remote.host, remote.port),
    )
    try:
        yield protocol, transport, Address(HOST, transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


def arrived(count: int) -> Callable[[UdpStats], bool]:
    return lambda stats: stats.datagrams_in >= count


async def _udp_run(plan: UdpPlan, seed: int, count: int = 2000, batch: int = 20) -> tuple[list[int], UdpChaosProxy]:
    """Send `count` numbered datagrams through a proxy, paced in batches so no socket buffer overflows; returns the
    numbers in the order they arrived."""
    async with udp_endpoint() as (sink, _, sink_address), udp_proxy(sink_address, plan, seed=seed) as proxy:
        async with udp_endpoint(remote=proxy.address) as (_, sender, _), asyncio.timeout(2 * TIMEOUT):
            for start in range(0, count, batch):
                for i in range(start, min(start + batch, count)):
                    sender.sendto(struct.pack("!I", i) + bytes(28))
                sent = min(start + batch, count)
                stats = await proxy.wait_for(arrived(sent))
                await sink.until(stats.forwarded)
            proxy.flush()
            stats = await proxy.wait_for(lambda s: s.held == 0)
            await sink.until(stats.forwarded)
        assert stats.overflow == 0
        return sink.numbers, proxy


async def test_udp_drop_duplicate_and_reorder_rates_are_as_planned_and_replay_by_seed() -> None:
    count = 2000
    plan = UdpPlan(drop=0.1, duplicate=0.05, reorder=0.08, reorder_max_hold=TIMEOUT)
    arrived, proxy = await _udp_run(plan, seed=3, count=count)
    stats = proxy.stats
    assert (stats.datagrams_in, stats.flows) == (count, 1)
    assert stats.forwarded == len(arrived) == count - stats.dropped + stats.duplicated
    assert len(set(arrived)) == count - stats.dropped
    assert len(arrived) - len(set(arrived)) == stats.duplicated
    late, highest = set(), -1
    for n in arrived:
        if n < highest:
            late.add(n)
        highest = max(highest, n)
    # every held datagram arrives after a later one, but for those still held when the run ended (flushed last)
    assert stats.reordered - 2 <= len(late) <= stats.reordered
    for observed, rate in ((stats.dropped, 0.1), (stats.duplicated, 0.05), (stats.reordered, 0.08)):
        assert abs(observed / count - rate) < 0.03, (observed, rate)
    again, _ = await _udp_run(plan, seed=3, count=count)
    assert again == arrived
    other, _ = await _udp_run(plan, seed=4, count=count)
    assert other != arrived


async def test_udp_blackhole_drops_everything_until_lifted() -> None:
    async with udp_endpoint() as (sink, _, sink_address), udp_proxy(sink_address) as proxy:
        async with udp_endpoint(remote=proxy.address) as (_, sender, _), asyncio.timeout(TIMEOUT):
            proxy.blackhole(True)
            for i in range(100):
                sender.sendto(struct.pack("!I", i))
            stats = await proxy.wait_for(lambda s: s.datagrams_in == 100)
            assert (stats.dropped, stats.blackholed, stats.forwarded) == (100, 100, 0)
            proxy.blackhole(False)
            sender.sendto(struct.pack("!I", 100))
            await sink.until(1)
            assert sink.numbers == [100]


async def test_udp_each_source_gets_its_own_replies() -> None:
    async with udp_endpoint(echo=True) as (_, _, echo_address), udp_proxy(echo_address) as proxy:
        async with (
            udp_endpoint(remote=proxy.address) as (a, a_out, _),
            udp_endpoint(remote=proxy.address) as (b, b_out, _),
            asyncio.timeout(TIMEOUT),
        ):
            for i in range(10):
                a_out.sendto(struct.pack("!I", i))
                b_out.sendto(struct.pack("!I", 100 + i))
            await a.until(10)
            await b.until(10)
            assert sorted(a.numbers) == list(range(10))
            assert sorted(b.numbers) == list(range(100, 110))
            assert proxy.stats.flows == 2


async def test_udp_delay_holds_datagrams_on_timers() -> None:
    plan = UdpPlan(delay=0.1, jitter=0.05)
    async with udp_endpoint() as (sink, _, sink_address), udp_proxy(sink_address, plan) as proxy:
        async with udp_endpoint(remote=proxy.address) as (_, sender, _), asyncio.timeout(TIMEOUT):
            started = time.monotonic()
            for i in range(20):
                sender.sendto(struct.pack("!I", i))
            await sink.until(20)
            assert time.monotonic() - started >= 0.099
            assert sorted(sink.numbers) == list(range(20))
            assert proxy.stats.delayed == 20


# -- configs and whole networks ----------------------------------------------------------------------------------
async def test_configs_route_through_the_proxies_and_survive_a_file(tmp_path: Path) -> None:
    configs = await network_configs(3, "tcp-tls", tmp_path, clients=1)
    real = [node.address for node in configs[0].parties]
    async with chaos_proxies(configs, TcpPlan(), seed=9, parties=[1, 2]) as chaos:
        assert set(chaos.proxies) == {1, 2}
        for config in chaos.configs:
            nodes = config.parties
            assert (nodes[0].address, nodes[0].listen) == (real[0], None)  # not proxied: unchanged
            for party in (1, 2):
                assert nodes[party].address == chaos.proxies[party].address
                assert nodes[party].listen == real[party] == chaos.proxies[party].target
        for i, config in enumerate(chaos.configs):
            path = tmp_path / f"member{i}.toml"
            path.write_text(sn_config.dump_config(config, relative_to=tmp_path))
            assert sn_config.load_config(path).parties == config.parties
    assert route_through(configs[0], {}) == configs[0]


async def _rounds(parties: Sequence[Network], rounds: int, size: int, label: bytes) -> None:
    """`rounds` all-to-all broadcasts of `size`-byte messages, each checked for content, sender and order."""
    n = len(parties)
    payload = {i: random.Random(i).randbytes(size) for i in range(n)}
    for rnd in range(rounds):
        await asyncio.gather(*(p.broadcast(payload[p.local_party_id] + label + b"%d" % rnd) for p in parties))
        for p in parties:
            got = dict([await p.receive(timeout=TIMEOUT) for _ in range(n)])
            assert got == {sender: payload[sender] + label + b"%d" % rnd for sender in range(n)}


async def test_three_parties_over_tcp_tls_through_proxies_exchange_messages() -> None:
    n = 3
    async with (
        chaos_network(n, TcpPlan(), transport="tcp-tls", seed=1, clients=1, timeout_ms=5000) as chaos,
        asyncio.timeout(3 * TIMEOUT),
    ):
        await _rounds(chaos.parties, 5, 100, b"round")
        big = os.urandom(1 << 20)
        await chaos.parties[0].send(2, big)
        assert await chaos.parties[2].receive_from(0, timeout=TIMEOUT) == big
        (client,) = chaos.parties.clients
        for party in range(n):
            await client.send(party, b"input")
        for p in chaos.parties:
            assert await p.receive_from_client(timeout=TIMEOUT) == (0, b"input")
        stats = {party: proxy.stats for party, proxy in chaos.proxies.items()}
    # party i dials every party above it, and the client dials all: each connection went through a proxy
    assert [stats[i].accepted for i in range(n)] == [1, 2, 3]
    assert stats[2].bytes_to_target > 1 << 20
    assert all(s.cuts == 0 and s.failed == 0 for s in stats.values())


def test_plans_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="drop"):
        UdpPlan(drop=1.5)
    with pytest.raises(ValueError, match="cut_after_bytes"):
        TcpPlan(cut_after_bytes=0)
    with pytest.raises(ValueError, match="jitter"):
        TcpPlan(jitter=1.0)
    assert isinstance(tcp_proxy(Address(HOST, 1)), TcpChaosProxy)


async def test_a_tcp_tls_network_survives_repeated_cuts_between_parties() -> None:
    async with (
        chaos_network(3, TcpPlan(), transport="tcp-tls", seed=11, timeout_ms=5000) as chaos,
        asyncio.timeout(3 * TIMEOUT),
    ):
        await _rounds(chaos.parties, 2, 100, b"before")
        for proxy in chaos.proxies.values():  # from now on each new connection is cut after ~200 KB, 4 times
            proxy.plan = TcpPlan(cut_after_bytes=200_000, max_cuts=4)
            proxy.cut_all()
        await _rounds(chaos.parties, 40, 20_000, b"cut")
        stats = {party: proxy.stats for party, proxy in chaos.proxies.items()}
    assert (stats[1].cuts, stats[2].cuts) == (1 + 4, 2 + 4)  # the manual ones, then every planned one


async def test_a_party_down_for_a_while_gets_what_was_sent_meanwhile() -> None:
    async with (
        chaos_network(3, TcpPlan(), transport="tcp-tls", seed=12, timeout_ms=5000) as chaos,
        asyncio.timeout(3 * TIMEOUT),
    ):
        proxy = chaos.proxies[2]
        proxy.refuse(True)  # as if party 2's host went away: its connections reset, new ones refused
        proxy.cut_all()
        await chaos.parties[0].send(2, b"during the outage")
        await proxy.wait_for(lambda s: s.refused >= 1)  # someone tried to come back, and could not
        proxy.refuse(False)
        assert await chaos.parties[2].receive_from(0, timeout=TIMEOUT) == b"during the outage"
        await _rounds(chaos.parties, 3, 1000, b"after")


async def test_a_quic_network_through_udp_proxies_works_and_rides_out_loss() -> None:
    async with (
        chaos_network(3, UdpPlan(), transport="quic", seed=13, timeout_ms=5000) as chaos,
        asyncio.timeout(3 * TIMEOUT),
    ):
        await _rounds(chaos.parties, 3, 1000, b"clean")
        for proxy in chaos.proxies.values():
            proxy.plan = UdpPlan(drop=0.05, duplicate=0.05, reorder=0.05, delay=0.001, jitter=0.002)
        await _rounds(chaos.parties, 10, 5000, b"lossy")
        stats = {party: proxy.stats for party, proxy in chaos.proxies.items()}
    assert [stats[i].flows for i in range(3)] == [0, 1, 2]  # party i dials every party above it
    assert sum(s.dropped for s in stats.values()) > 0
