"""Shared helpers for the tcp-tls attack suites: a victim network, a hand-driven TLS peer, log and health checks.

The victim is a real 3-party tcp-tls network on 127.0.0.1 with one legitimate client connected. Keys come from
core's own `testing._make_keys` (as `local_network` makes them), with one allowlisted client more than is
connected: that spare identity is an *authenticated* attacker (its key is pinned, so TLS and the Handshake check
pass) without being refused as a duplicate of the connected legitimate client.

Every wait here is bounded by `TIMEOUT`; nothing sleeps to synchronise: log records and connection states are
awaited through events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest

from stoffelnet_core import codec, errors, keys
from stoffelnet_core.config import ClientsConfig, Config, TLSConfig
from stoffelnet_core.frames import PROTOCOL_VERSION, Handshake
from stoffelnet_core.ids import Address, Node, PartyId
from stoffelnet_core.mux import DATA, HEADER, WINDOW_UPDATE
from stoffelnet_core.network import Client, Network, open_client, open_network
from stoffelnet_core.peer import ConnectionState
from stoffelnet_core.testing import _bind_ports, _make_keys

N_PARTIES = 3
TIMEOUT = 5.0  # seconds: the bound on every single wait in these suites
ALPN_PARTY = "stoffelnet/1-party"
ALPN_CLIENT = "stoffelnet/1-client"
SPARE_CLIENT = 1  # allowlisted, never connected by the fixture: the authenticated attacker's identity
EVIL = b"EVIL: must never reach an application"

_rounds = itertools.count()


# -- the victim --------------------------------------------------------------------------------------------------
@attrs.frozen
class Victim:
    """A running 3-party tcp-tls network, its legitimate client, and where its keys are."""

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

    def client_config(self, client: int) -> Config:
        return _client_config(self.base, self.client_tls(client), client)


def _client_config(base: Config, tls: TLSConfig, client: int) -> Config:
    return attrs.evolve(base, party_id=None, client_id=client, clients=ClientsConfig(), tls=tls)


@pytest.fixture
async def victim(tmp_path: Path) -> AsyncIterator[Victim]:
    """Three parties and client 0 over real mutual TLS on 127.0.0.1; client 1 is allowlisted but not connected."""
    base = Config(
        transport="tcp-tls",
        party_id=0,
        parties=tuple(Node(PartyId(i), Address("127.0.0.1", 0)) for i in range(N_PARTIES)),
        timeout_ms=int(TIMEOUT * 1000),
        max_retries=2,
    )
    base = await _bind_ports(base)
    base, tls_or_none = _make_keys(base, N_PARTIES, 2, tmp_path / "keys")
    tls = [t for t in tls_or_none if t is not None]
    assert len(tls) == N_PARTIES + 2
    async with contextlib.AsyncExitStack() as stack:
        configs = [attrs.evolve(base, party_id=i, tls=tls[i]) for i in range(N_PARTIES)]
        async with asyncio.timeout(3 * TIMEOUT):
            # A TaskGroup, not gather: if one party cannot start, the others are cancelled (and close themselves)
            # instead of going on starting in the background after the fixture failed.
            async with asyncio.TaskGroup() as group:
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


# -- a hand-driven TLS peer --------------------------------------------------------------------------------------
def client_context(cert: Path | None, key: Path | None, trusted: list[Path], alpn: str = ALPN_CLIENT) -> ssl.SSLContext:
    """A dialer's context as the transport builds it (TLS 1.3, pinned anchors, no hostname); `cert` None: no cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        assert key is not None
        ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cadata="".join(p.read_text() for p in trusted))
    ctx.set_alpn_protocols([alpn])
    return ctx


def server_context(cert: Path, key: Path, alpn: str = ALPN_PARTY) -> ssl.SSLContext:
    """A fake listener's context: presents `cert`, asks nothing of the dialer."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols([alpn])
    return ctx


def mux_frame(kind: int, channel: int, payload: bytes = b"", *, length: int | None = None) -> bytes:
    """One mux frame: the 9-byte header (type, channel, length) and `payload`; `length` overrides the header."""
    return HEADER.pack(kind, channel, len(payload) if length is None else length) + payload


def handshake_frame(role: str, claimed: int | None) -> bytes:
    """A Handshake envelope on control channel 0, as one mux DATA frame."""
    return mux_frame(DATA, 0, codec.encode(Handshake(role, claimed, PROTOCOL_VERSION, b"s" * 16, b"n" * 16)))


def data_frame(stream: int, seq: int, payload: bytes = EVIL) -> bytes:
    """An application Data envelope for `stream`, on its channel ``stream + 1``."""
    return mux_frame(DATA, stream + 1, codec.encode_data(stream, seq, None, payload))


class RawPeer:
    """One TLS connection to a party, driven byte by byte: the wire format is written here by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._control = codec.FrameDecoder()

    @classmethod
    async def connect(cls, address: Address, ctx: ssl.SSLContext) -> RawPeer:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(
                address.host, address.port, ssl=ctx, server_hostname="stoffelnet"
            )
        return cls(reader, writer)

    @classmethod
    async def authenticated_client(cls, v: Victim, party: int, client: int = SPARE_CLIENT) -> RawPeer:
        """An allowlisted client that completed the real Handshake with `party` (it has been answered)."""
        tls = v.client_tls(client)
        peer = await cls.connect(v.address(party), client_context(tls.cert, tls.key, v.party_certs))
        peer.send(handshake_frame("client", client))
        reply = await peer.read_handshake()
        assert (reply.role, reply.id) == ("server", party)
        return peer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_handshake(self) -> Handshake:
        """Read mux frames until the peer's Handshake completes on channel 0 (window updates are skipped)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                kind, channel, length = HEADER.unpack(await self.reader.readexactly(HEADER.size))
                if kind == WINDOW_UPDATE:
                    continue
                assert (kind, channel) == (DATA, 0), f"unexpected mux frame {kind} on channel {channel}"
                for envelope, _ in self._control.feed(await self.reader.readexactly(length)):
                    assert isinstance(envelope, Handshake), envelope
                    return envelope

    async def expect_closed(self) -> bytes:
        """Read until the party ends the connection (EOF, reset or a TLS alert); returns what arrived before."""
        got = bytearray()
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except (OSError, asyncio.IncompleteReadError):  # ssl.SSLError is an OSError
                    break
                if not chunk:
                    break
                got += chunk
        await self.close()
        return bytes(got)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(TIMEOUT):
                await self.writer.wait_closed()


async def expect_refused_in_tls(address: Address, ctx: ssl.SSLContext, *, then: bytes = b"") -> bytes:
    """Dial with `ctx` and expect the listener to refuse: during the TLS handshake, or (TLS 1.3 checks the client's
    certificate after the client finished) right after it, while `then` is already on its way. Returns the bytes
    that arrived before the connection ended."""
    try:
        peer = await RawPeer.connect(address, ctx)
    except (OSError, asyncio.IncompleteReadError):
        return b""
    peer.send(then)
    return await peer.expect_closed()


# -- logs ----------------------------------------------------------------------------------------------------------
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


@pytest.fixture
def logwatch(caplog: pytest.LogCaptureFixture) -> Iterator[LogWatch]:
    """Captures `stoffelnet.*` warnings (in `caplog` too, at WARNING) and lets a test await a given refusal."""
    caplog.set_level(logging.WARNING)
    watch = LogWatch()
    root = logging.getLogger("stoffelnet")
    root.addHandler(watch)
    try:
        yield watch
    finally:
        root.removeHandler(watch)


def caplog_messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


def make_identity(folder: Path, name: str) -> TLSConfig:
    """A fresh key and self-signed certificate that nobody pinned (a stranger), written to `folder`."""
    tls = TLSConfig(folder / f"{name}.pem", folder / f"{name}.key")
    keys.write_identity(keys.generate_identity(name), tls.cert, tls.key)
    return tls
