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
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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
    "EVIL",
    "HOST",
    "N_PARTIES",
    "SPARE_CLIENT",
    "TIMEOUT",
    "LogWatch",
    "Victim",
    "assert_accepts_fresh_client",
    "assert_healthy",
    "assert_nothing_pending",
    "assert_unaffected",
    "caplog_messages",
    "control_frame",
    "data_frame",
    "dial_party",
    "handshake_frame",
    "make_identity",
    "mux_frame",
    "start_victim",
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
async def start_victim(folder: Path, transport: str) -> AsyncIterator[Victim]:
    """Three parties and client 0 over `transport` on 127.0.0.1; client 1 is allowlisted but not connected."""
    base = Config(
        transport=transport,
        party_id=0,
        parties=tuple(Node(PartyId(i), Address(HOST, 0)) for i in range(N_PARTIES)),
        timeout_ms=int(TIMEOUT * 1000),
        max_retries=2,
        resume_ms=int(RESUME * 1000),
    )
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


def caplog_messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


def make_identity(folder: Path, name: str) -> TLSConfig:
    """A fresh key and self-signed certificate that nobody pinned (a stranger), written to `folder`."""
    tls = TLSConfig(folder / f"{name}.pem", folder / f"{name}.key")
    keys.write_identity(keys.generate_identity(name), tls.cert, tls.key)
    return tls
