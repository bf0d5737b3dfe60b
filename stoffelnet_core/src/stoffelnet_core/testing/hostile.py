"""A victim network and the checks around it, for attack and fault suites of any transport.

The victim is a real 3-party network on 127.0.0.1 with one legitimate client connected, keys made as
`local_network` makes them, and one allowlisted client more than is connected: that spare identity is an
*authenticated* attacker (its key is pinned) that is not refused as a duplicate of the connected client. After an
attack, `assert_unaffected` proves the rest still works and that nothing the attacker sent was delivered.

Our own tcp-tls and quic attack suites use it; so can a third-party transport's. Every wait is bounded by
`TIMEOUT`; nothing sleeps to synchronise (log records and states are awaited through events).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import itertools
import logging
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from .. import codec, errors, keys
from ..config import ClientsConfig, Config, TLSConfig
from ..frames import PROTOCOL_VERSION, Envelope, Handshake
from ..ids import Address, Node, PartyId
from ..mux import DATA, HEADER
from ..network import Client, Network, NetworkManager, open_client, open_network
from ..peer import ConnectionState
from . import _bind_ports, _make_keys

__all__ = [
    "BLOCKS_MARGIN",
    "EVIL",
    "HOST",
    "N_PARTIES",
    "RSS_MARGIN",
    "SPARE_CLIENT",
    "TIMEOUT",
    "LogWatch",
    "MiB",
    "ResourceMonitor",
    "Resources",
    "TcpAttackers",
    "Victim",
    "assert_accepts_fresh_client",
    "assert_blocks_within",
    "assert_healthy",
    "assert_nothing_pending",
    "assert_rss_within",
    "assert_unaffected",
    "await_condition",
    "await_fds",
    "caplog_messages",
    "control_frame",
    "data_frame",
    "dial_party",
    "handshake_frame",
    "healthy_meanwhile",
    "log_records_as_text",
    "make_identity",
    "mux_frame",
    "open_fds",
    "release_memory",
    "rss_bytes",
    "start_victim",
    "tls_client_hello",
]

N_PARTIES = 3
TIMEOUT = 5.0  # seconds: the bound on every single wait
RESUME = 1.0  # seconds a vanished peer is waited for before its loss is final (well within TIMEOUT)
SPARE_CLIENT = 1  # allowlisted, never connected: the authenticated attacker's identity
EVIL = b"EVIL: must never reach an application"
HOST = "127.0.0.1"

_rounds = itertools.count()


# -- the victim --------------------------------------------------------------------------------------------------
@attrs.frozen
class Victim:
    """A running 3-party network, its legitimate client, and where its keys are."""

    parties: list[Network]
    client: Client  # client 0, connected to every party
    base: Config  # the shared config (party_id 0): parties with address, cert and fingerprint, clients allowlist
    tls: list[TLSConfig]  # party0..party2, then client0, client1 (the spare)

    def address(self, party: int) -> Address:
        address = self.base.node(party).address
        assert address is not None
        return address

    def party_tls(self, party: int) -> TLSConfig:
        return self.tls[party]

    def client_tls(self, client: int) -> TLSConfig:
        return self.tls[N_PARTIES + client]

    @property
    def party_certs(self) -> list[Path]:
        return [t.cert for t in self.tls[:N_PARTIES]]

    def fingerprint(self, party: int) -> str:
        """The key pinned for `party`."""
        pinned = self.base.node(party).fingerprint
        assert pinned is not None
        return pinned

    def client_config(self, client: int) -> Config:
        return _client_config(self.base, self.client_tls(client), client)


def _client_config(base: Config, tls: TLSConfig, client: int) -> Config:
    return attrs.evolve(base, party_id=None, client_id=client, clients=ClientsConfig(), tls=tls)


@contextlib.asynccontextmanager
async def start_victim(folder: Path, transport: str, **overrides: Any) -> AsyncIterator[Victim]:
    """Three parties and client 0 over `transport` on 127.0.0.1; client 1 is allowlisted but not connected.

    `overrides` set config keys for every member (e.g. ``timeout_ms``, or ``transport_options`` to shorten a
    transport's handshake timeout), as `local_network`'s do."""
    base = Config(
        transport=transport,
        party_id=0,
        parties=tuple(Node(PartyId(i), Address(HOST, 0)) for i in range(N_PARTIES)),
        timeout_ms=int(TIMEOUT * 1000),
        max_retries=2,
        resume_ms=int(RESUME * 1000),
    )
    base = attrs.evolve(base, **overrides)
    base = await _bind_ports(base)
    base, tls_or_none = _make_keys(base, N_PARTIES, 2, folder / "keys")
    tls = [t for t in tls_or_none if t is not None]
    assert len(tls) == N_PARTIES + 2
    async with contextlib.AsyncExitStack() as stack:
        configs = [attrs.evolve(base, party_id=i, tls=tls[i]) for i in range(N_PARTIES)]
        async with asyncio.timeout(3 * TIMEOUT):
            async with asyncio.TaskGroup() as group:  # one party failing to start cancels the others' start
                starting = [group.create_task(stack.enter_async_context(open_network(c))) for c in configs]
            parties = [task.result() for task in starting]
            client = await stack.enter_async_context(open_client(_client_config(base, tls[N_PARTIES], 0)))
            await asyncio.gather(*(p.wait_for_clients(1, timeout=TIMEOUT) for p in parties))
        yield Victim(parties, client, base, tls)


# -- checks that the network is unaffected ------------------------------------------------------------------------
async def assert_healthy(v: Victim) -> None:
    """Every existing connection still works: a broadcast round among all parties and a client round trip with each.

    Also proves that nothing an attacker sent was delivered: after the round, every inbox is empty.
    """
    tag = f"round {next(_rounds)}"
    async with asyncio.timeout(TIMEOUT):
        sent = {i: f"{tag} from party {i}".encode() for i in range(N_PARTIES)}
        await asyncio.gather(*(p.broadcast(sent[i]) for i, p in enumerate(v.parties)))
        for p in v.parties:
            got = {}
            for _ in range(N_PARTIES):
                sender, data = await p.receive()
                assert sender not in got, f"party {p.local_party_id} got two messages from {sender}"
                got[sender] = data
            assert got == sent
        for i in range(N_PARTIES):
            await v.client.send(i, f"{tag}: input for {i}".encode())
        for i, p in enumerate(v.parties):
            client_id, data = await p.receive_from_client()
            assert (client_id, data) == (0, f"{tag}: input for {i}".encode())
            await p.send_to_client(client_id, b"output: " + data)
        replies = dict([await v.client.receive() for _ in range(N_PARTIES)])
        assert replies == {i: f"output: {tag}: input for {i}".encode() for i in range(N_PARTIES)}
    await assert_nothing_pending(v)


async def assert_nothing_pending(v: Victim) -> None:
    """No party holds an undelivered message from anyone (a timeout of 0 checks the inbox once, without waiting)."""
    for p in v.parties:
        with pytest.raises(errors.Timeout):
            await p.receive(timeout=0)
        with pytest.raises(errors.Timeout):
            await p.receive_from_client(timeout=0)
        for stats in (p.stats().peers, p.stats().clients):
            for peer, s in stats.items():
                if s.state is ConnectionState.CONNECTED:  # a connection cut for a fault keeps its last counters
                    assert s.receive_buffered == 0, f"party {p.local_party_id}: {s.receive_buffered} B from {peer}"
    with pytest.raises(errors.Timeout):
        await v.client.receive(timeout=0)


async def assert_accepts_fresh_client(v: Victim, client: int = SPARE_CLIENT) -> None:
    """Each party still listens and admits a new legitimate connection: the spare client connects and round-trips."""
    async with asyncio.timeout(TIMEOUT), open_client(v.client_config(client)) as fresh:
        for i in range(N_PARTIES):
            await fresh.send(i, b"fresh hello")
        for p in v.parties:
            client_id, data = await p.receive_from_client(client)
            assert (client_id, data) == (client, b"fresh hello")
            await p.send_to_client(client, b"fresh reply")
        assert sorted([(await fresh.receive())[0] for _ in range(N_PARTIES)]) == list(range(N_PARTIES))


async def assert_unaffected(v: Victim) -> None:
    """Both checks: the existing connections work, and a fresh legitimate client is admitted."""
    await assert_healthy(v)
    await assert_accepts_fresh_client(v)


@contextlib.asynccontextmanager
async def healthy_meanwhile(v: Victim) -> AsyncIterator[list[float]]:
    """`assert_healthy` rounds back to back while the block runs (an attack); yields their durations in seconds.

    A round that fails or takes longer than TIMEOUT fails the test, and at least one round must complete while the
    block runs (when the attack is quicker than a round, that round is awaited on leaving)."""
    durations: list[float] = []
    stop = asyncio.Event()
    one_done = asyncio.Event()

    async def rounds() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await assert_healthy(v)
            durations.append(time.perf_counter() - started)
            one_done.set()

    task = asyncio.create_task(rounds())
    try:
        yield durations
        one = asyncio.ensure_future(one_done.wait())
        try:
            async with asyncio.timeout(TIMEOUT):
                await asyncio.wait([task, one], return_when=asyncio.FIRST_COMPLETED)
        finally:
            one.cancel()
    finally:
        stop.set()
        async with asyncio.timeout(2 * TIMEOUT):
            await task  # re-raises a failed round
    assert durations, "no round completed while the attack ran"


# -- resources: file descriptors and memory of this process (the victim runs in it) -------------------------------
MiB = 1024 * 1024
RSS_MARGIN = 20 * MiB  # how far above its baseline the victim's resident memory may stay after an attack
_POLL = 0.02  # seconds between two looks while awaiting a resource (polling is for resources only, never events)


def open_fds() -> int:
    """File descriptors this process holds now (Linux: the entries of /proc/self/fd, less the one reading it)."""
    return len(os.listdir("/proc/self/fd")) - 1


def rss_bytes() -> int:
    """Resident memory of this process now, in bytes (Linux: VmRSS in /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None elsewhere (musl, macOS)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_memory() -> None:
    """Collect garbage, then give the allocator's free pages back to the OS (glibc's ``malloc_trim(0)``).

    Without the second step, resident memory stays at an attack's high-water mark even when nothing is held: glibc
    keeps freed heap pages for reuse (asyncio's TLS, for one, allocates a 256 KiB buffer per connection, which
    lands on the heap once glibc's mmap threshold has risen). What remains afterwards is what the process holds;
    a real leak does not go away by this."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _fd_targets() -> list[str]:
    """What each open descriptor is (socket:[inode], a path, ...), for a failure message."""
    out = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        with contextlib.suppress(OSError):
            out.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
    return out


@attrs.frozen
class Resources:
    """One sample: open descriptors, resident bytes, and the interpreter's live memory blocks (Python objects and
    their buffers: `sys.getallocatedblocks`, blind to allocator fragmentation, so a leak shows there exactly)."""

    fds: int
    rss: int
    blocks: int = 0

    @classmethod
    def now(cls, *, release: bool = True) -> Resources:
        """Sample now; `release` first frees what nothing holds (`release_memory`), so only what is held counts."""
        if release:
            release_memory()
        return cls(open_fds(), rss_bytes(), sys.getallocatedblocks())


async def await_condition(
    check: Callable[[], bool], what: str | Callable[[], str], *, deadline: float = TIMEOUT
) -> float:
    """Poll `check` (after a garbage collection) until it holds; returns the seconds that took. Fails the test with
    `what` after `deadline` seconds. For resources that are released without an event (descriptors, memory,
    entries of a table); wait for events with events."""
    started = time.perf_counter()
    while True:
        gc.collect()
        if check():
            return time.perf_counter() - started
        if time.perf_counter() - started > deadline:
            pytest.fail(f"after {deadline:.1f}s: {what if isinstance(what, str) else what()}")
        await asyncio.sleep(_POLL)


async def await_fds(baseline: int, *, slack: int = 0, deadline: float = TIMEOUT) -> float:
    """Wait until this process holds at most `baseline + slack` descriptors; returns the seconds that took. On
    failure, the message lists every descriptor still open (sockets show as ``socket:[inode]``)."""
    started = time.perf_counter()
    while True:
        gc.collect()
        count = open_fds()
        if count <= baseline + slack:
            return time.perf_counter() - started
        if time.perf_counter() - started > deadline:
            held = "\n  ".join(_fd_targets())
            pytest.fail(f"{count} descriptors open {deadline:.1f}s after the attack, baseline {baseline}:\n  {held}")
        await asyncio.sleep(_POLL)


async def assert_rss_within(baseline: int, margin: int = RSS_MARGIN, *, deadline: float = TIMEOUT) -> int:
    """Resident memory, after `release_memory`, comes back to at most `baseline + margin` bytes within `deadline`
    seconds; returns it. Take the baseline with `Resources.now()`, which releases the same way."""

    def released() -> bool:
        release_memory()
        return rss_bytes() <= baseline + margin

    await await_condition(
        released,
        lambda: f"resident memory {rss_bytes() / MiB:.1f} MiB, baseline {baseline / MiB:.1f} + {margin / MiB:.0f} MiB",
        deadline=deadline,
    )
    return rss_bytes()


# Live memory blocks more than before that may remain after an attack: caches, and the log records pytest keeps (about
# 15 per record). A leaked connection is hundreds of blocks (a QUIC one about 600), so ~50 leaked connections exceed it.
BLOCKS_MARGIN = 30_000


async def assert_blocks_within(baseline: int, margin: int = BLOCKS_MARGIN, *, deadline: float = TIMEOUT) -> int:
    """The interpreter's live memory blocks come back to at most `baseline + margin` within `deadline` seconds (after
    a garbage collection); returns the count. Unlike resident memory, this is blind to what the allocators keep
    for reuse after an attack (pymalloc frees an arena only when all of it is free), so it sees a leak exactly."""
    await await_condition(
        lambda: sys.getallocatedblocks() <= baseline + margin,
        lambda: f"{sys.getallocatedblocks()} live memory blocks, baseline {baseline} + {margin}",
        deadline=deadline,
    )
    return sys.getallocatedblocks()


class ResourceMonitor:
    """Samples descriptors, resident memory and any named gauges (e.g. a listener's pending handshakes) every
    `interval` seconds while it runs, keeping the peaks; for benchmarks and reports, not for pass/fail decisions.

        async with ResourceMonitor(pending=lambda: len(listener._pending)) as monitor:
            ...  # the attack
        monitor.before, monitor.peak, monitor.peaks["pending"]
    """

    def __init__(self, interval: float = 0.01, **gauges: Callable[[], int]) -> None:
        self.interval = interval
        self.gauges = gauges
        self.before = Resources(0, 0)
        self.peak = Resources(0, 0)
        self.peaks: dict[str, int] = dict.fromkeys(gauges, 0)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        peak, blocks = self.peak, sys.getallocatedblocks()
        self.peak = Resources(max(peak.fds, open_fds()), max(peak.rss, rss_bytes()), max(peak.blocks, blocks))
        for name, gauge in self.gauges.items():
            self.peaks[name] = max(self.peaks[name], gauge())

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> ResourceMonitor:
        self.before = Resources.now()
        self.peak = self.before
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sample()


# -- raw TCP attackers (for any transport over TCP) ---------------------------------------------------------------
def tls_client_hello(alpn: str = "stoffelnet/1-party") -> bytes:
    """The first flight of a TLS 1.3 client (its ClientHello record), made with the ssl module in memory; send a
    prefix of it for a handshake that never completes."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="stoffelnet")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


class TcpAttackers:
    """Many raw TCP connections to one address, each optionally opening with some bytes and then silent (a
    slow-loris), whose end (the listener's FIN or reset) is awaited per connection.

    Connections are opened in batches of `batch`, each batch awaited, so the listen backlog (asyncio's default is
    100) never overflows: a SYN dropped there would be retried a second later and blur every measurement."""

    def __init__(self, address: Address, *, batch: int = 50) -> None:
        self.address = address
        self.batch = batch
        self.opened: list[float] = []  # per connection: when it was established (loop time)
        self.ended: dict[int, float] = {}  # per connection index: when the listener ended it (loop time)
        self.changed = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._watchers: list[asyncio.Task[None]] = []

    async def open(self, count: int, first: bytes = b"", *, tls: ssl.SSLContext | None = None) -> None:
        """Open `count` connections (over TLS with `tls`: each completes its TLS handshake first), write `first` on
        each, and watch each for its end."""
        loop = asyncio.get_running_loop()
        host, port = self.address.host, self.address.port
        name = "stoffelnet" if tls is not None else None
        for start in range(0, count, self.batch):
            n = min(self.batch, count - start)
            async with asyncio.timeout(TIMEOUT):
                pairs = await asyncio.gather(
                    *(asyncio.open_connection(host, port, ssl=tls, server_hostname=name) for _ in range(n))
                )
            for reader, writer in pairs:
                index = len(self._writers)
                self.opened.append(loop.time())
                self._writers.append(writer)
                if first:
                    writer.write(first)
                self._watchers.append(asyncio.create_task(self._watch(index, reader)))

    async def _watch(self, index: int, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass
        self.ended[index] = asyncio.get_running_loop().time()
        self.changed.set()

    @property
    def open_count(self) -> int:
        """Connections the listener has not ended yet."""
        return len(self._writers) - len(self.ended)

    async def wait_ended(self, deadline: float) -> None:
        """Wait until the listener ended every connection; fails the test after `deadline` seconds."""
        try:
            async with asyncio.timeout(deadline):
                while self.open_count:
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            pytest.fail(f"{self.open_count} of {len(self._writers)} connections still open after {deadline:.1f}s")

    async def close(self) -> None:
        """Hang up every connection and wait until their sockets are released."""
        for writer in self._writers:
            writer.transport.abort()
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._writers.clear()
        self._watchers.clear()

    async def __aenter__(self) -> TcpAttackers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def dial_party(config: Config, party: int) -> None:
    """Dial `party` as the config's member (a party through `NetworkManager.connect`, a client by `open_client`),
    then close: raises whatever the dial raises (an impostor listener: `AuthenticationError`)."""
    if config.party_id is not None:
        async with NetworkManager(config) as manager:
            await manager.connect(party)
    else:
        async with open_client(config):
            pass


# -- the wire, written by hand ------------------------------------------------------------------------------------
def mux_frame(kind: int, channel: int, payload: bytes = b"", *, length: int | None = None) -> bytes:
    """One mux frame: the 9-byte header (type, channel, length) and `payload`; `length` overrides the header."""
    return HEADER.pack(kind, channel, len(payload) if length is None else length) + payload


def control_frame(envelope: Envelope) -> bytes:
    """A control envelope (Handshake, Proof, Ack, Close) on channel 0, as one mux DATA frame."""
    return mux_frame(DATA, 0, codec.encode(envelope))


def handshake_frame(role: str, claimed: int | None, nonce: bytes = b"n" * 16) -> bytes:
    """A Handshake envelope on control channel 0, as one mux DATA frame."""
    return control_frame(Handshake(role, claimed, PROTOCOL_VERSION, b"s" * 16, nonce))


def data_frame(stream: int, seq: int, payload: bytes = EVIL) -> bytes:
    """An application Data envelope for `stream`, on its channel ``stream + 1``."""
    return mux_frame(DATA, stream + 1, codec.encode_data(stream, seq, None, payload))


# -- logs and keys -------------------------------------------------------------------------------------------------
class LogWatch(logging.Handler):
    """Records of the `stoffelnet` loggers at WARNING and above, with a bounded, event-driven wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def matching(self, *needles: str, logger: str | None = None) -> list[logging.LogRecord]:
        return [
            r
            for r in self.records
            if (logger is None or r.name == logger) and all(n in r.getMessage() for n in needles)
        ]

    async def wait_for(self, *needles: str, logger: str | None = None) -> logging.LogRecord:
        """The first record whose message holds every needle (from `logger` when given); fails after TIMEOUT."""
        try:
            async with asyncio.timeout(TIMEOUT):
                while not (found := self.matching(*needles, logger=logger)):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            seen = "\n".join(f"  {r.name}: {r.getMessage()}" for r in self.records) or "  (none)"
            pytest.fail(f"no log record from {logger or 'stoffelnet'} with {needles}; warnings seen:\n{seen}")
        return found[0]

    @contextlib.contextmanager
    def attached(self) -> Iterator[LogWatch]:
        """Watch the `stoffelnet` loggers while the block runs."""
        root = logging.getLogger("stoffelnet")
        root.addHandler(self)
        try:
            yield self
        finally:
            root.removeHandler(self)


class _TextOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = record.getMessage(), ()
        if record.exc_info:  # a traceback holds its frames: keep its text instead
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return True


@contextlib.contextmanager
def log_records_as_text() -> Iterator[None]:
    """While the block runs, every record of the `stoffelnet` loggers is formatted at once and keeps only its text.

    For memory measurements under pytest: its log capture keeps every record of a test, and a record whose
    arguments include an exception keeps that exception's traceback, its frames, and whatever they reference (a
    whole connection, with its buffers) alive until the test ends. An ordinary handler drops the record once
    written, so this measures what a deployed process holds."""
    text_only = _TextOnly()
    manager = logging.Logger.manager
    loggers = [logging.getLogger("stoffelnet")] + [
        lg
        for name, lg in list(manager.loggerDict.items())
        if name.startswith("stoffelnet.") and isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        logger.addFilter(text_only)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(text_only)


def caplog_messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


def make_identity(folder: Path, name: str) -> TLSConfig:
    """A fresh key and self-signed certificate that nobody pinned (a stranger), written to `folder`."""
    tls = TLSConfig(folder / f"{name}.pem", folder / f"{name}.key")
    keys.write_identity(keys.generate_identity(name), tls.cert, tls.key)
    return tls
