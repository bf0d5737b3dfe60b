"""Helpers for protocol authors and transport authors: whole networks in one process, and fault switches.

`local_network(n)` gives n connected parties (and optional clients) over any installed transport, with addresses
on 127.0.0.1 (free ports) for network transports. The conformance suite (`stoffelnet_core.testing.conformance`)
is built on it; run it against a transport with::

    pytest --pyargs stoffelnet_core.testing.conformance --stoffelnet-transport=<name>
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import attrs

from .. import errors, keys
from ..config import ClientsConfig, Config, TLSConfig
from ..ids import Address, Node, PartyId
from ..network import Client, Network, open_client, open_network

__all__ = ["LocalNetwork", "crash", "cut", "free_port", "local_network", "sever", "wait_connected"]

_NETWORK_OVERRIDES = frozenset(
    {
        "max_frame_size",
        "receive_window_bytes",
        "send_buffer_bytes",
        "resume_ms",
        "resend_buffer_bytes",
        "timeout_ms",
        "max_retries",
        "transport_options",
        "keepalive_ms",
    }
)


class LocalNetwork(Sequence[Network]):
    """The parties of a `local_network` (index them by party id), with its `clients`."""

    def __init__(self, parties: list[Network], clients: list[Client]) -> None:
        self._parties = parties
        self.clients = clients

    @overload
    def __getitem__(self, index: int) -> Network: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Network]: ...

    def __getitem__(self, index: int | slice) -> Network | Sequence[Network]:
        return self._parties[index]

    def __len__(self) -> int:
        return len(self._parties)

    def __iter__(self) -> Iterator[Network]:
        return iter(self._parties)


def _addresses(transport: str, n: int) -> list[Address]:
    if transport == "loopback":
        host = f"local-{secrets.token_hex(4)}"
        return [Address(host, 1000 + i) for i in range(n)]
    return [Address("127.0.0.1", 0) for _ in range(n)]


@contextlib.asynccontextmanager
async def local_network(
    n: int, transport: str = "loopback", clients: int = 0, **overrides: Any
) -> AsyncIterator[LocalNetwork]:
    """Start `n` connected parties (ids 0..n-1) and `clients` clients in this process; close them all on exit.

    `overrides` set config keys for every member (`max_frame_size`, `receive_window_bytes`, `send_buffer_bytes`,
    `timeout_ms`, `max_retries`, `transport_options`).
    """
    unknown = set(overrides) - _NETWORK_OVERRIDES
    if unknown:
        raise errors.ConfigError(f"local_network does not take {sorted(unknown)}", key=sorted(unknown)[0])
    if n < 1:
        raise errors.ConfigError(f"a network needs at least one party, got {n}", key="n", value=n)
    addresses = _addresses(transport, n)
    base = Config(
        transport=transport,
        party_id=0,
        parties=tuple(Node(PartyId(i), a) for i, a in enumerate(addresses)),
        **overrides,
    )
    async with contextlib.AsyncExitStack() as stack:
        tls: list[TLSConfig | None] = [None] * (n + clients)
        if transport != "loopback":
            if any(a.port == 0 for a in addresses):
                base = await _bind_ports(base)
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stoffelnet-keys-")))
            base, tls = _make_keys(base, n, clients, folder)
        configs = [attrs.evolve(base, party_id=i, tls=tls[i]) for i in range(n)]
        async with asyncio.TaskGroup() as group:  # one party failing to start cancels the others' start
            starts = [group.create_task(stack.enter_async_context(open_network(c))) for c in configs]
        parties = [task.result() for task in starts]
        members = [
            await stack.enter_async_context(
                open_client(attrs.evolve(base, party_id=None, client_id=j, clients=ClientsConfig(), tls=tls[n + j]))
            )
            for j in range(clients)
        ]
        if clients:
            await asyncio.gather(*(p.wait_for_clients(clients, timeout=base.timeout) for p in parties))
        yield LocalNetwork(list(parties), members)


def _make_keys(config: Config, n: int, clients: int, folder: Path) -> tuple[Config, list[TLSConfig | None]]:
    """Keys and certificates for every member in `folder`; parties pinned by certificate, clients allowlisted."""
    tls: list[TLSConfig | None] = []
    fingerprints: list[str] = []
    for name in [*(f"party{i}" for i in range(n)), *(f"client{j}" for j in range(clients))]:
        identity = keys.generate_identity(name)
        keys.write_identity(identity, folder / f"{name}.pem", folder / f"{name}.key")
        tls.append(TLSConfig(folder / f"{name}.pem", folder / f"{name}.key"))
        fingerprints.append(identity.fingerprint)
    parties = tuple(
        attrs.evolve(node, fingerprint=fingerprints[i], cert=folder / f"party{i}.pem")
        for i, node in enumerate(config.parties)
    )
    allowed = ClientsConfig(
        allow=tuple(fingerprints[n:]), certs=tuple(folder / f"client{j}.pem" for j in range(clients))
    )
    return attrs.evolve(config, parties=parties, clients=allowed), tls


async def _bind_ports(config: Config) -> Config:
    """Give every party a free port on 127.0.0.1, free for both TCP and UDP (the socket is released just before
    use)."""
    nodes = [attrs.evolve(node, address=Address("127.0.0.1", free_port())) for node in config.parties]
    return attrs.evolve(config, parties=tuple(nodes))


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free for TCP and UDP, below the OS's ephemeral range when there is room: the client sockets a test
    opens by the hundred (attackers, dialers) take ephemeral ports, and one must never take a party's between now
    and its bind."""
    import random
    import socket

    floor = _ephemeral_floor()
    for _ in range(100):
        port = random.randint(10_000, floor - 1) if floor > 12_000 else 0
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        ):
            try:
                tcp.bind(("127.0.0.1", port))
                port = tcp.getsockname()[1]
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(port)
    raise errors.InitializationFailed("no port free for both TCP and UDP on 127.0.0.1")


def sever(net: Network | Client, party: int) -> None:
    """Cut the connection to `party` as an unexpected loss (no Close, unsent bytes dropped), on both ends.

    Both ends then resume it by themselves (unless the config's ``resume_ms`` is 0): the application sees only
    latency.
    """
    net.connection(party)._pipe.abort()


async def cut(net: Network | Client, party: int, timeout: float = 5.0) -> None:
    """`sever` the connection to `party`, then wait until this end resumed it on a new pipe (`TimeoutError` if
    it does not within `timeout`). The other end may notice the cut later, once its event loop gets to it."""
    conn = net.connection(party)
    severed = conn._pipe
    severed.abort()
    async with asyncio.timeout(timeout):
        while conn._pipe is severed or not conn.is_connected():
            await net._wait()


async def crash(net: Network | Client) -> None:
    """Make `net` vanish as a killed process would: no Close to anyone, its listener gone, nothing dialled again.

    Its peers see the loss, wait ``resume_ms`` for it to come back, then fail every waiter with `ConnectionLost`.
    `net.close()` still releases what is left.
    """
    net._resume_s = 0.0
    await net._cancel_tasks()
    if net._listener is not None:
        await net._listener.close()
        net._listener = None
    for conn in [*net._parties.values(), *net._clients.values()]:
        conn._pipe.abort()


async def wait_connected(net: Network | Client, party: int, timeout: float = 5.0) -> None:
    """Wait until the connection to `party` is up (again), e.g. after `sever`; raises `TimeoutError`."""
    async with asyncio.timeout(timeout):
        while not net.connection(party).is_connected():
            await net._wait()
