"""Fault injection between parties: TCP and UDP proxies on 127.0.0.1 that cut, stall, trickle, drop, duplicate,
reorder and delay traffic, for the chaos suites of any transport.

A proxy sits in front of one party: the party listens on its real port (`Node.listen`) and every other member
reaches it at the proxy (`Node.address`). `route_through` rewrites configs that way, `chaos_proxies` starts one
proxy per party around a set of configs (in-process parties, or processes given files from `dump_config`), and
`chaos_network` does all of it for n parties in this process::

    async with chaos_network(3, TcpPlan(), transport="tcp-tls", seed=seed) as chaos:
        for proxy in chaos.proxies.values():
            proxy.plan = TcpPlan(cut_after_bytes=200_000, max_cuts=4)  # for connections from now on...
            proxy.cut_all()  # ...which is every one
        await chaos.parties[0].send(2, b"share")
        await chaos.proxies[2].wait_for(lambda stats: stats.cuts >= 2)

For parties as separate processes, write the routed configs to files and start one process per file::

    configs = await network_configs(3, "quic", folder)
    async with chaos_proxies(configs, UdpPlan(drop=0.02), seed=seed) as chaos:
        for i, config in enumerate(chaos.configs):
            (folder / f"party{i}.toml").write_text(dump_config(config, relative_to=folder))
        ...  # `stoffelnet party partyI.toml` for each, while the proxies run

Every random decision comes from one `random.Random(seed)` per proxy and is drawn at a point that depends only on
the order of events the proxy sees (a TCP connection's faults when it is accepted, a datagram's fate when it
arrives), so a failing run replays with its seed. Nothing here blocks the event loop: delays are timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast, overload

import attrs

from .. import errors
from ..config import ClientsConfig, Config
from ..ids import Address, Node, PartyId
from ..network import open_client, open_network
from . import LocalNetwork, _bind_ports, _make_keys

__all__ = [
    "HOST",
    "ChaosNetwork",
    "ChaosProxies",
    "ChaosProxy",
    "CutMode",
    "TcpChaosProxy",
    "TcpPlan",
    "TcpStats",
    "UdpChaosProxy",
    "UdpPlan",
    "UdpStats",
    "chaos_network",
    "chaos_proxies",
    "network_configs",
    "route_through",
    "tcp_proxy",
    "udp_proxy",
]

HOST = "127.0.0.1"
"""Proxies bind here and nowhere else: fault injection is for tests on one machine."""

CutMode = Literal["abort", "close"]
"""How a cut ends a connection: ``"abort"`` resets both sides at once (RST, unsent bytes lost, as a crash or a
dropped link looks), ``"close"`` flushes and ends both with a FIN (as a peer that hung up cleanly)."""

_PENDING = "pending"  # reading held: a chunk waits in the proxy (stall, trickle, a full buffer at the other end)
_CONNECTING = "connecting"  # reading held: the connection to the target is not up yet
_SOCKET_BUFFER = 1 << 20  # UDP socket buffers: a burst must not be lost in the kernel before a fault decides
_MAX_HELD = 64  # datagrams held back for reordering, per flow and direction
_MAX_BACKLOG = 1024  # datagrams waiting for a new flow's upstream socket
_MAX_UDP_QUEUE = 1 << 20  # bytes queued on a UDP socket before datagrams are dropped, as a router's queue would


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _rate(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in 0..1, got {value!r}")


def _jitter(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value!r}")


def _reset(transport: asyncio.Transport) -> None:
    """End a TCP connection with an RST: linger 0 makes close() reset instead of FIN, as a crash or a cut link."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# -- plans and stats ---------------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class TcpPlan:
    """The faults a TCP proxy injects into each connection it accepts (no field set: a faithful proxy).

    Byte counts are of bytes forwarded on one connection, both directions together. Cut points are drawn per
    connection, uniformly within ``jitter`` of the value (``[N*(1-jitter), N*(1+jitter)]``), so repeated
    connections are cut at different places, and the same seed gives the same places.
    """

    cut_after_bytes: int | None = attrs.field(default=None, validator=_positive)
    cut_after_seconds: float | None = attrs.field(default=None, validator=_positive)
    jitter: float = attrs.field(default=0.5, validator=_jitter)
    cut_mode: CutMode = attrs.field(default="abort", validator=attrs.validators.in_(("abort", "close")))
    max_cuts: int | None = attrs.field(default=None, validator=_non_negative)
    """The most cuts this plan makes over the proxy's life (manual `cut_all` not counted); then it forwards."""
    stall_at_bytes: int | None = attrs.field(default=None, validator=_non_negative)
    stall_seconds: float = attrs.field(default=0.0, validator=_non_negative)
    """Once per connection, at `stall_at_bytes`: forward nothing either way this long, then go on, losing nothing."""
    trickle_bytes: int | None = attrs.field(default=None, validator=_positive)
    trickle_delay: float = attrs.field(default=0.0, validator=_non_negative)
    """Forward at most `trickle_bytes` per write, each direction, with `trickle_delay` seconds between writes."""


@attrs.frozen
class TcpStats:
    """What a TCP proxy did so far (a snapshot)."""

    accepted: int = 0  # connections accepted, refused ones included
    refused: int = 0  # dropped at once by `refuse(True)`
    failed: int = 0  # ended because the target could not be reached
    active: int = 0  # proxied connections open now
    cuts: int = 0  # connections cut, by the plan or by `cut_all`
    stalls: int = 0
    bytes_to_target: int = 0
    bytes_from_target: int = 0
    cut_points: tuple[int | None, ...] = ()
    """The byte count each proxied connection was to be cut at, in order of acceptance (None: no byte cut)."""


@attrs.frozen(kw_only=True)
class UdpPlan:
    """The faults a UDP proxy injects, each datagram and direction independently (no field set: faithful).

    A reordered datagram is held back and released after the next `reorder_depth` datagrams of its flow and
    direction went out, or after `reorder_max_hold` seconds, whichever comes first. Delayed datagrams (`delay`
    plus uniform ``[0, jitter]``) go out on timers, so jitter reorders too.
    """

    drop: float = attrs.field(default=0.0, validator=_rate)
    duplicate: float = attrs.field(default=0.0, validator=_rate)
    reorder: float = attrs.field(default=0.0, validator=_rate)
    reorder_depth: int = attrs.field(default=1, validator=_positive)
    reorder_max_hold: float = attrs.field(default=0.05, validator=_non_negative)
    delay: float = attrs.field(default=0.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.0, validator=_non_negative)


@attrs.frozen
class UdpStats:
    """What a UDP proxy did so far (a snapshot). ``forwarded == datagrams_in - dropped + duplicated`` once nothing is
    held or delayed (and nothing overflowed)."""

    datagrams_in: int = 0  # received from either side
    forwarded: int = 0  # sent on, every copy of a duplicate counted
    dropped: int = 0  # by the plan or the blackhole
    blackholed: int = 0  # of those, by `blackhole(True)`
    duplicated: int = 0
    reordered: int = 0  # held back to be released later
    delayed: int = 0
    overflow: int = 0  # lost because a queue was full (a slow target, or a flow still opening)
    flows: int = 0  # distinct source addresses seen (each has its own upstream socket)
    held: int = 0  # held back now, for reordering


StatsT = TypeVar("StatsT", TcpStats, UdpStats)


class _Proxy(Generic[StatsT]):
    """What both proxies share: an address, a lifetime as an async context manager, and waiting on stats."""

    def __init__(self, target: Address, seed: int, port: int) -> None:
        self.target = target
        self._rng = random.Random(seed)
        self._port = port
        self._address: Address | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False

    @property
    def address(self) -> Address:
        """Where the proxy listens (on 127.0.0.1): put it in the party's config as its `address`."""
        if self._address is None:
            raise errors.InvalidState("the proxy is not started: use `async with` or `await proxy.start()`")
        return self._address

    @property
    def stats(self) -> StatsT:
        raise NotImplementedError

    async def start(self) -> Address:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> _Proxy[StatsT]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_for(self, predicate: Callable[[StatsT], bool], timeout: float = 5.0) -> StatsT:
        """Wait until `predicate(stats)` holds (checked whenever the stats change); raises `TimeoutError` showing
        the stats after `timeout` seconds. The way to synchronise a test with a fault without sleeping."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not predicate(stats := self.stats):
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
        except TimeoutError:
            raise TimeoutError(f"proxy to {self.target}: condition not met within {timeout}s; {self.stats}") from None
        return stats

    def _notify(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


# -- TCP ---------------------------------------------------------------------------------------------------------
class _Half(asyncio.Protocol):
    """One socket of a proxied connection: the accepted one, or the one to the target."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.holds: set[str] = set()  # why reading is paused; it resumes when none is left
        self.write_blocked = False
        self.lost = False

    def hold(self, reason: str) -> None:
        if not self.holds and self.transport is not None:
            self.transport.pause_reading()
        self.holds.add(reason)

    def release(self, reason: str) -> None:
        if reason in self.holds:
            self.holds.discard(reason)
            if not self.holds and self.transport is not None:
                self.transport.resume_reading()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # not isinstance: uvloop's are no subclasses
        self.transport = transport
        if self.holds:
            transport.pause_reading()

    def hang_up(self) -> None:
        """End our side with a FIN, then read and discard until the peer ends its side: a clean end both ways
        (closing with unread bytes would make the kernel send an RST instead)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        self.link.proxy._draining.add(self)
        transport.write_eof()
        self.holds.clear()
        transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.link.received(self, data)

    def eof_received(self) -> bool:
        if self.link.done:
            return False  # a hung-up connection's peer ended its side too: close
        self.link.eof(self)
        return True  # keep the socket open for the other direction: a half-close is forwarded as one

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.link.proxy._draining.discard(self)
        self.link.lost(self, exc)

    def pause_writing(self) -> None:
        self.write_blocked = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        self.link.pump(self.link.toward(self))


@attrs.define(eq=False)
class _Direction:
    """Bytes going one way through a link, and what holds them back."""

    source: _Half
    dest: _Half
    to_target: bool
    pending: bytearray = attrs.field(factory=bytearray)  # at most about one read's worth: the source is held
    eof: bool = False  # the source sent its FIN
    eof_sent: bool = False
    trickle: asyncio.TimerHandle | None = None


class _Link:
    """One proxied connection: two sockets and the faults drawn for it when it was accepted."""

    def __init__(self, proxy: TcpChaosProxy, plan: TcpPlan, cut_at: int | None, cut_after: float | None) -> None:
        self.proxy = proxy
        self.plan = plan
        self.loop = asyncio.get_running_loop()
        self.client = _Half(self)
        self.upstream = _Half(self)
        self.up = _Direction(self.client, self.upstream, True)
        self.down = _Direction(self.upstream, self.client, False)
        self.forwarded = 0
        self.cut_at = cut_at
        self.stall_at = plan.stall_at_bytes
        self.stalling = False
        self.done = False
        self.timers: list[asyncio.TimerHandle] = []
        self.connecting: asyncio.Task[None] | None = None
        self.client.hold(_CONNECTING)
        if cut_after is not None:
            self.timers.append(self.loop.call_later(cut_after, self._auto_cut))
        if self.stall_at == 0:
            self._begin_stall()

    def toward(self, dest: _Half) -> _Direction:
        return self.up if dest is self.upstream else self.down

    @property
    def paused(self) -> bool:
        return self.stalling or self.proxy._paused

    async def connect(self) -> None:
        target = self.proxy.target
        try:
            await self.loop.create_connection(lambda: self.upstream, target.host, target.port)
        except OSError:
            if not self.done:
                self.proxy._failed += 1
                self.cut("abort", counted=False)
            return
        if self.done:  # cut while connecting
            assert self.upstream.transport is not None
            _reset(self.upstream.transport)
            return
        self.client.release(_CONNECTING)
        self.pump(self.up)

    # -- forwarding --
    def received(self, half: _Half, data: bytes) -> None:
        if self.done:
            return
        d = self.up if half is self.client else self.down
        dest = d.dest.transport
        n = len(data)
        if (  # the fast path: nothing in the way, write the chunk as it is
            not d.pending
            and dest is not None
            and not d.dest.write_blocked
            and not self.paused
            and self.plan.trickle_bytes is None
            and (self.cut_at is None or self.forwarded + n < self.cut_at)
            and (self.stall_at is None or self.forwarded + n < self.stall_at)
        ):
            dest.write(data)
            self._count(d, n)
            return
        d.pending += data
        self.pump(d)

    def pump(self, d: _Direction) -> None:
        """Forward what waits in `d` as far as the faults allow; hold the source while anything is left."""
        plan = self.plan
        while d.pending and not self.done:
            dest = d.dest.transport
            if self.paused or d.dest.write_blocked or dest is None or d.trickle is not None:
                break
            if dest.is_closing():
                d.pending.clear()
                break
            n = len(d.pending)
            if plan.trickle_bytes is not None:
                n = min(n, plan.trickle_bytes)
            for point in (self.cut_at, self.stall_at):
                if point is not None and point > self.forwarded:
                    n = min(n, point - self.forwarded)
            dest.write(bytes(d.pending[:n]))
            del d.pending[:n]
            if plan.trickle_bytes is not None and plan.trickle_delay > 0:
                d.trickle = self.loop.call_later(plan.trickle_delay, self._trickled, d)
            self._count(d, n)
        if self.done:
            return
        if d.pending:
            d.source.hold(_PENDING)
            return
        d.source.release(_PENDING)
        if d.eof and not d.eof_sent:
            d.eof_sent = True
            dest = d.dest.transport
            if dest is not None and not dest.is_closing() and dest.can_write_eof():
                dest.write_eof()
            self._maybe_close()

    def _trickled(self, d: _Direction) -> None:
        d.trickle = None
        self.pump(d)

    def _count(self, d: _Direction, n: int) -> None:
        self.forwarded += n
        if d.to_target:
            self.proxy._bytes_to_target += n
        else:
            self.proxy._bytes_from_target += n
        if self.stall_at is not None and self.forwarded >= self.stall_at:
            self._begin_stall()
        if self.cut_at is not None and self.forwarded >= self.cut_at:
            self.cut_at = None
            self._auto_cut()
        self.proxy._notify()

    def _begin_stall(self) -> None:
        self.stall_at = None
        self.stalling = True
        self.proxy._stalls += 1
        self.timers.append(self.loop.call_later(self.plan.stall_seconds, self._end_stall))

    def _end_stall(self) -> None:
        self.stalling = False
        self.resume()

    def resume(self) -> None:
        if not self.done:
            self.pump(self.up)
            self.pump(self.down)

    # -- ending --
    def eof(self, half: _Half) -> None:
        if not self.done:
            d = self.up if half is self.client else self.down
            d.eof = True
            self.pump(d)

    def lost(self, half: _Half, exc: Exception | None) -> None:
        if self.done:
            return
        if exc is not None:  # a reset or an error: pass it on as a reset
            self.cut("abort", counted=False)
            return
        d = self.up if half is self.client else self.down
        d.eof = True
        self.pump(d)
        self._maybe_close()

    def _maybe_close(self) -> None:
        """Close both sockets once nothing more can flow: both FINs forwarded, or one socket gone and drained."""
        if self.done:
            return
        if self.client.lost and self.upstream.lost:
            self._finish()
            return
        both_ended = self.up.eof_sent and self.down.eof_sent
        one_gone = (self.client.lost and self.up.eof_sent) or (self.upstream.lost and self.down.eof_sent)
        if both_ended or one_gone:
            for half in (self.client, self.upstream):
                if half.transport is not None:
                    half.transport.close()  # flushes what is written, then FIN
            if self.connecting is not None and self.upstream.transport is None:
                self.connecting.cancel()
                self._finish()
            elif self.client.lost or self.upstream.lost or both_ended:
                self._finish()

    def _auto_cut(self) -> None:
        if not self.done and self.proxy._may_cut(self.plan):
            self.proxy._auto_cuts += 1
            self.cut(self.plan.cut_mode)

    def cut(self, mode: CutMode, *, counted: bool = True) -> None:
        """End both sockets at once (`mode` says how); counted as a cut unless it only passes on an end."""
        if self.done:
            return
        for half in (self.client, self.upstream):
            if half.transport is not None and not half.transport.is_closing():
                if mode == "abort":
                    _reset(half.transport)
                else:
                    half.hang_up()
        if self.connecting is not None and self.upstream.transport is None:
            self.connecting.cancel()
        if counted:
            self.proxy._cuts += 1
        self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        for handle in self.timers:
            handle.cancel()
        for d in (self.up, self.down):
            if d.trickle is not None:
                d.trickle.cancel()
            d.pending.clear()
        self.proxy._links.discard(self)
        self.proxy._notify()


class _Refused(asyncio.Protocol):
    """An accepted connection dropped at once, as when the party is down (`refuse(True)`)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # not isinstance: uvloop's are no subclasses
        _reset(transport)


class TcpChaosProxy(_Proxy[TcpStats]):
    """A TCP proxy on 127.0.0.1 in front of `target` that injects the faults of `plan` into every connection.

    Use it as an async context manager (`tcp_proxy`); `address` is where to connect. Built on asyncio Protocols
    with backpressure both ways (a slow reader stops the writer, through the proxy), and a fast path that
    forwards each read as it is when no fault is due, so many small messages pass at close to socket speed.
    """

    def __init__(self, target: Address, plan: TcpPlan | None = None, *, seed: int = 0, port: int = 0) -> None:
        super().__init__(target, seed, port)
        self.plan = plan if plan is not None else TcpPlan()
        """The plan for connections accepted from now on: assign a new one to change the faults mid-test, and
        `cut_all()` to have every connection come back under it."""
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._draining: set[_Half] = set()  # hung up by a "close" cut, waiting for the peer's FIN
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused = False
        self._refusing = False
        self._accepted = 0
        self._refused = 0
        self._failed = 0
        self._cuts = 0
        self._auto_cuts = 0
        self._stalls = 0
        self._bytes_to_target = 0
        self._bytes_from_target = 0
        self._cut_points: list[int | None] = []

    async def start(self) -> Address:
        """Bind and start accepting; returns `address`."""
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(self._accept, HOST, self._port)
            port = self._server.sockets[0].getsockname()[1]
            self._address = Address(HOST, port)
        return self.address

    async def __aenter__(self) -> TcpChaosProxy:
        await self.start()
        return self

    async def close(self) -> None:
        """Stop accepting and reset every connection still open."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.cut("abort", counted=False)
        for half in list(self._draining):
            if half.transport is not None:
                _reset(half.transport)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._notify()

    @property
    def stats(self) -> TcpStats:
        return TcpStats(
            accepted=self._accepted,
            refused=self._refused,
            failed=self._failed,
            active=len(self._links),
            cuts=self._cuts,
            stalls=self._stalls,
            bytes_to_target=self._bytes_to_target,
            bytes_from_target=self._bytes_from_target,
            cut_points=tuple(self._cut_points),
        )

    # -- manual controls --
    def cut_all(self, mode: CutMode = "abort") -> int:
        """Cut every open connection now (not limited by `max_cuts`); returns how many were cut."""
        links = list(self._links)
        for link in links:
            link.cut(mode)
        return len(links)

    def pause(self) -> None:
        """Stop forwarding on every connection, open and new, until `resume` (connections stay up; nothing lost)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        for link in list(self._links):
            link.resume()

    def refuse(self, on: bool = True) -> None:
        """While on, accept new connections and reset them at once, as if the party were down. Open connections
        are left alone: `cut_all` them too for a crash."""
        self._refusing = on

    # -- internals --
    def _may_cut(self, plan: TcpPlan) -> bool:
        return plan.max_cuts is None or self._auto_cuts < plan.max_cuts

    def _accept(self) -> asyncio.Protocol:
        self._accepted += 1
        if self._refusing or self._closed:
            self._refused += 1
            self._notify()
            return _Refused()
        plan = self.plan
        spread = plan.jitter
        cut_at = None
        if plan.cut_after_bytes is not None:
            n = plan.cut_after_bytes
            cut_at = self._rng.randint(max(1, round(n * (1 - spread))), max(1, round(n * (1 + spread))))
        cut_after = None
        if plan.cut_after_seconds is not None:
            t = plan.cut_after_seconds
            cut_after = self._rng.uniform(t * (1 - spread), t * (1 + spread))
        self._cut_points.append(cut_at)
        link = _Link(self, plan, cut_at, cut_after)
        self._links.add(link)
        task = asyncio.get_running_loop().create_task(link.connect())
        link.connecting = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._notify()
        return link.client


def tcp_proxy(target: Address, plan: TcpPlan | None = None, *, seed: int = 0, port: int = 0) -> TcpChaosProxy:
    """A `TcpChaosProxy` to use with ``async with tcp_proxy(target, plan, seed=1) as proxy: proxy.address``."""
    return TcpChaosProxy(target, plan, seed=seed, port=port)


# -- UDP ---------------------------------------------------------------------------------------------------------
@attrs.define(eq=False)
class _Held:
    data: bytes
    copies: int
    delay: float
    remaining: int
    timer: asyncio.TimerHandle | None = None


@attrs.define(eq=False)
class _Flow:
    """One source address and its own upstream socket, as a NAT keeps it, so replies find their way back."""

    source: tuple[str, int]
    transport: asyncio.DatagramTransport | None = None
    backlog: list[bytes] = attrs.field(factory=list)
    held_up: list[_Held] = attrs.field(factory=list)
    held_down: list[_Held] = attrs.field(factory=list)

    def held(self, to_target: bool) -> list[_Held]:
        return self.held_up if to_target else self.held_down


class _Front(asyncio.DatagramProtocol):
    def __init__(self, proxy: UdpChaosProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.proxy._from_source(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for a datagram sent back: lost, as on a network


class _Back(asyncio.DatagramProtocol):
    def __init__(self, proxy: UdpChaosProxy, flow: _Flow) -> None:
        self.proxy = proxy
        self.flow = flow

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.proxy._route(self.flow, False, data)

    def error_received(self, exc: Exception) -> None:
        pass  # the target is not listening (ICMP port unreachable): lost, as on a network


def _queued(transport: asyncio.DatagramTransport) -> int:
    """Bytes waiting in the transport (asyncio has it on its datagram transports; typeshed does not say so)."""
    size = getattr(transport, "get_write_buffer_size", None)
    return int(size()) if callable(size) else 0


def _enlarge_buffers(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)


class UdpChaosProxy(_Proxy[UdpStats]):
    """A UDP proxy on 127.0.0.1 in front of `target` (a QUIC party): each source address gets its own upstream
    socket, so the target's replies go back to the right sender; `plan` drops, duplicates, reorders and delays
    datagrams both ways. Each datagram takes exactly four draws from the generator, whatever happens to it, so
    the fate of the i-th datagram depends only on the seed and i."""

    def __init__(self, target: Address, plan: UdpPlan | None = None, *, seed: int = 0, port: int = 0) -> None:
        super().__init__(target, seed, port)
        self.plan = plan if plan is not None else UdpPlan()
        """The plan for datagrams from now on."""
        self._front: asyncio.DatagramTransport | None = None
        self._flows: dict[tuple[str, int], _Flow] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._blackhole = False
        self._in = 0
        self._forwarded = 0
        self._dropped = 0
        self._blackholed = 0
        self._duplicated = 0
        self._reordered = 0
        self._delayed = 0
        self._overflow = 0

    async def start(self) -> Address:
        """Bind and start relaying; returns `address`."""
        if self._front is None:
            loop = asyncio.get_running_loop()
            self._front, _ = await loop.create_datagram_endpoint(lambda: _Front(self), local_addr=(HOST, self._port))
            _enlarge_buffers(self._front)
            self._address = Address(HOST, self._front.get_extra_info("sockname")[1])
        return self.address

    async def __aenter__(self) -> UdpChaosProxy:
        await self.start()
        return self

    async def close(self) -> None:
        """Stop relaying; held and delayed datagrams are dropped."""
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for flow in self._flows.values():
            for held in (flow.held_up, flow.held_down):
                for entry in held:
                    if entry.timer is not None:
                        entry.timer.cancel()
                held.clear()
            if flow.transport is not None:
                flow.transport.close()
        if self._front is not None:
            self._front.close()
        self._notify()

    @property
    def stats(self) -> UdpStats:
        return UdpStats(
            datagrams_in=self._in,
            forwarded=self._forwarded,
            dropped=self._dropped,
            blackholed=self._blackholed,
            duplicated=self._duplicated,
            reordered=self._reordered,
            delayed=self._delayed,
            overflow=self._overflow,
            flows=len(self._flows),
            held=sum(len(f.held_up) + len(f.held_down) for f in self._flows.values()),
        )

    # -- manual controls --
    def blackhole(self, on: bool = True) -> None:
        """While on, drop every datagram both ways: to the parties, a cut link (QUIC sees only silence)."""
        self._blackhole = on

    def flush(self) -> None:
        """Release every datagram held back for reordering now."""
        for flow in list(self._flows.values()):
            for to_target in (True, False):
                for entry in list(flow.held(to_target)):
                    self._release(flow, to_target, entry)

    # -- internals --
    def _from_source(self, data: bytes, source: tuple[str, int]) -> None:
        if self._closed:
            return
        flow = self._flows.get(source)
        if flow is None:
            flow = self._flows[source] = _Flow(source)
            task = asyncio.get_running_loop().create_task(self._open(flow))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._route(flow, True, data)

    async def _open(self, flow: _Flow) -> None:
        loop = asyncio.get_running_loop()
        target = (self.target.host, self.target.port)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Back(self, flow), local_addr=(HOST, 0), remote_addr=target
            )
        except OSError:
            self._overflow += len(flow.backlog)
            flow.backlog.clear()
            return
        if self._closed:
            transport.close()
            return
        _enlarge_buffers(transport)
        flow.transport = transport
        backlog, flow.backlog = flow.backlog, []
        for data in backlog:
            transport.sendto(data)

    def _route(self, flow: _Flow, to_target: bool, data: bytes) -> None:
        """Decide one datagram's fate: four draws, always, so every later decision stays replayable."""
        if self._closed:
            return
        rng = self._rng
        drop, duplicate, reorder, jitter = rng.random(), rng.random(), rng.random(), rng.random()
        self._in += 1
        plan = self.plan
        if self._blackhole or drop < plan.drop:
            self._dropped += 1
            if self._blackhole:
                self._blackholed += 1
            self._notify()
            return
        copies = 2 if duplicate < plan.duplicate else 1
        self._duplicated += copies - 1
        delay = plan.delay + jitter * plan.jitter
        held = flow.held(to_target)
        if reorder < plan.reorder and len(held) < _MAX_HELD:
            self._reordered += 1
            entry = _Held(data, copies, delay, plan.reorder_depth)
            entry.timer = asyncio.get_running_loop().call_later(
                plan.reorder_max_hold, self._release, flow, to_target, entry
            )
            held.append(entry)
            self._notify()
            return
        self._emit(flow, to_target, data, copies, delay)
        for entry in list(held):
            entry.remaining -= 1
            if entry.remaining <= 0:
                self._release(flow, to_target, entry)
        self._notify()

    def _release(self, flow: _Flow, to_target: bool, entry: _Held) -> None:
        held = flow.held(to_target)
        if entry not in held:
            return
        held.remove(entry)
        if entry.timer is not None:
            entry.timer.cancel()
        self._emit(flow, to_target, entry.data, entry.copies, entry.delay)
        self._notify()

    def _emit(self, flow: _Flow, to_target: bool, data: bytes, copies: int, delay: float) -> None:
        if delay > 0:
            self._delayed += 1
            for _ in range(copies):
                self._later(delay, flow, to_target, data)
        else:
            for _ in range(copies):
                self._send(flow, to_target, data)

    def _later(self, delay: float, flow: _Flow, to_target: bool, data: bytes) -> None:
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            assert handle is not None
            self._timers.discard(handle)
            self._send(flow, to_target, data)
            self._notify()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def _send(self, flow: _Flow, to_target: bool, data: bytes) -> None:
        if self._closed:
            return
        if self._blackhole:  # held or delayed before the blackhole began: it takes them too
            self._dropped += 1
            self._blackholed += 1
            return
        if to_target:
            if flow.transport is None:
                if len(flow.backlog) >= _MAX_BACKLOG:
                    self._overflow += 1
                    return
                flow.backlog.append(data)
            elif _queued(flow.transport) > _MAX_UDP_QUEUE:
                self._overflow += 1
                return
            else:
                flow.transport.sendto(data)
        else:
            if self._front is None or _queued(self._front) > _MAX_UDP_QUEUE:
                self._overflow += 1
                return
            self._front.sendto(data, flow.source)
        self._forwarded += 1


def udp_proxy(target: Address, plan: UdpPlan | None = None, *, seed: int = 0, port: int = 0) -> UdpChaosProxy:
    """A `UdpChaosProxy` to use with ``async with udp_proxy(target, plan, seed=1) as proxy: proxy.address``."""
    return UdpChaosProxy(target, plan, seed=seed, port=port)


ChaosProxy = TcpChaosProxy | UdpChaosProxy
ProxyT = TypeVar("ProxyT", TcpChaosProxy, UdpChaosProxy)


# -- configs behind proxies --------------------------------------------------------------------------------------
def route_through(config: Config, proxies: Mapping[int, Address]) -> Config:
    """`config` with each party in `proxies` reached at its proxy, and listening where it was reached before.

    The party's `listen` becomes its old bind address (its `listen`, else its `address`); its `address`, where
    every other member dials it, becomes the proxy's. Parties not in `proxies` are left as they are.
    """
    unknown = set(proxies) - {node.id for node in config.parties}
    if unknown:
        raise errors.ConfigError(f"no party {sorted(unknown)} in the config to route through a proxy", key="parties")
    nodes = tuple(
        attrs.evolve(node, address=proxies[node.id], listen=node.bind_address) if node.id in proxies else node
        for node in config.parties
    )
    return attrs.evolve(config, parties=nodes)


async def network_configs(n: int, transport: str, folder: Path, *, clients: int = 0, **overrides: Any) -> list[Config]:
    """Configs for `n` parties then `clients` clients on 127.0.0.1, as `local_network` makes them: free ports, keys
    and certificates in `folder`, every party pinned, the clients allowlisted. `overrides` set config keys for all.

    Write them with `config.dump_config(c, relative_to=folder)` to start each member as its own process.
    """
    if n < 1:
        raise errors.ConfigError(f"a network needs at least one party, got {n}", key="n", value=n)
    base = Config(
        transport=transport,
        party_id=0,
        parties=tuple(Node(PartyId(i), Address(HOST, 0)) for i in range(n)),
        **overrides,
    )
    base = await _bind_ports(base)
    base, tls = _make_keys(base, n, clients, folder)
    parties = [attrs.evolve(base, party_id=i, tls=tls[i]) for i in range(n)]
    members = [
        attrs.evolve(base, party_id=None, client_id=j, clients=ClientsConfig(), tls=tls[n + j]) for j in range(clients)
    ]
    return parties + members


@attrs.frozen
class ChaosProxies(Generic[ProxyT]):
    """Configs rewritten to reach the parties through `proxies` (by party id), in the order they were given."""

    configs: list[Config]
    proxies: dict[int, ProxyT]


@overload
def chaos_proxies(
    configs: Sequence[Config], plan: TcpPlan, *, seed: int = 0, parties: Iterable[int] | None = None
) -> AbstractAsyncContextManager[ChaosProxies[TcpChaosProxy]]: ...


@overload
def chaos_proxies(
    configs: Sequence[Config], plan: UdpPlan, *, seed: int = 0, parties: Iterable[int] | None = None
) -> AbstractAsyncContextManager[ChaosProxies[UdpChaosProxy]]: ...


def chaos_proxies(
    configs: Sequence[Config], plan: TcpPlan | UdpPlan, *, seed: int = 0, parties: Iterable[int] | None = None
) -> AbstractAsyncContextManager[ChaosProxies[Any]]:
    """One proxy per party (or per party in `parties`) in front of its address, and `configs` (parties' and
    clients' alike, all with the same parties table) rewritten by `route_through` to use them.

    A `TcpPlan` starts TCP proxies (tcp-tls, or any byte-stream transport), a `UdpPlan` UDP ones (quic). Each
    proxy's seed is drawn from `seed` in party order, so the whole setup replays from one number.
    """
    return _chaos_proxies(configs, plan, seed, parties)


@contextlib.asynccontextmanager
async def _chaos_proxies(
    configs: Sequence[Config], plan: TcpPlan | UdpPlan, seed: int, parties: Iterable[int] | None
) -> AsyncIterator[ChaosProxies[Any]]:
    if not configs:
        raise errors.ConfigError("chaos_proxies needs at least one config", key="configs")
    table = configs[0].parties
    for config in configs[1:]:
        if config.parties != table:
            raise errors.ConfigError(
                "every config must list the same parties to be routed through proxies", key="parties"
            )
    chosen = sorted({node.id for node in table} if parties is None else set(parties))
    seeds = random.Random(seed)
    async with contextlib.AsyncExitStack() as stack:
        proxies: dict[int, Any] = {}
        for party in chosen:
            target = configs[0].node(party).address
            if target is None or target.port == 0:
                raise errors.ConfigError(f"party {party} needs a real address to proxy, got {target}", key="parties")
            proxy_seed = seeds.getrandbits(64)
            proxy: ChaosProxy = (
                TcpChaosProxy(target, plan, seed=proxy_seed)
                if isinstance(plan, TcpPlan)
                else UdpChaosProxy(target, plan, seed=proxy_seed)
            )
            proxies[party] = await stack.enter_async_context(proxy)
        addresses = {party: proxy.address for party, proxy in proxies.items()}
        yield ChaosProxies([route_through(c, addresses) for c in configs], proxies)


@attrs.frozen
class ChaosNetwork(Generic[ProxyT]):
    """A running network whose parties reach each other through proxies (party `i` is behind ``proxies[i]``)."""

    parties: LocalNetwork  # index by party id; `.clients` has the clients
    proxies: dict[int, ProxyT]
    configs: list[Config]  # the parties' configs, then the clients'


@overload
def chaos_network(
    n: int,
    plan: TcpPlan,
    *,
    transport: str = "tcp-tls",
    seed: int = 0,
    clients: int = 0,
    proxied: Iterable[int] | None = None,
    **overrides: Any,
) -> AbstractAsyncContextManager[ChaosNetwork[TcpChaosProxy]]: ...


@overload
def chaos_network(
    n: int,
    plan: UdpPlan,
    *,
    transport: str = "tcp-tls",
    seed: int = 0,
    clients: int = 0,
    proxied: Iterable[int] | None = None,
    **overrides: Any,
) -> AbstractAsyncContextManager[ChaosNetwork[UdpChaosProxy]]: ...


def chaos_network(
    n: int,
    plan: TcpPlan | UdpPlan,
    *,
    transport: str = "tcp-tls",
    seed: int = 0,
    clients: int = 0,
    proxied: Iterable[int] | None = None,
    **overrides: Any,
) -> AbstractAsyncContextManager[ChaosNetwork[Any]]:
    """`local_network` behind proxies: `n` parties and `clients` clients in this process over `transport`, every
    party (or those in `proxied`) reached through a proxy running `plan`; all closed on exit, proxies last.

    Faults start with the first connection, so a plan that cuts early may keep the network from starting: start
    with a faithful plan, then assign ``proxy.plan`` and `cut_all` (TCP) once it is up, or use the manual controls.
    """
    return _chaos_network(n, plan, transport, seed, clients, proxied, overrides)


@contextlib.asynccontextmanager
async def _chaos_network(
    n: int,
    plan: TcpPlan | UdpPlan,
    transport: str,
    seed: int,
    clients: int,
    proxied: Iterable[int] | None,
    overrides: dict[str, Any],
) -> AsyncIterator[ChaosNetwork[Any]]:
    async with contextlib.AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stoffelnet-chaos-")))
        plain = await network_configs(n, transport, folder, clients=clients, **overrides)
        routed = await stack.enter_async_context(_chaos_proxies(plain, plan, seed, proxied))
        async with asyncio.TaskGroup() as group:  # one party failing to start cancels the others' start
            starts = [group.create_task(stack.enter_async_context(open_network(c))) for c in routed.configs[:n]]
        members = [task.result() for task in starts]
        connected = [await stack.enter_async_context(open_client(c)) for c in routed.configs[n:]]
        if clients:
            timeout = routed.configs[0].timeout
            await asyncio.gather(*(p.wait_for_clients(clients, timeout=timeout) for p in members))
        yield ChaosNetwork(LocalNetwork(members, connected), routed.proxies, routed.configs)
