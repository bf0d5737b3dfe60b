"""What every baseline (and every benchmark) needs and writes the same way: keys, free ports, the send/receive pair.

For transport authors: a `stoffelnet_<name>/baseline.py` imports these instead of writing them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from .. import keys
from ..config import Config, TLSConfig
from ..ids import Address, Node, PartyId
from ..network import Network, open_network

__all__ = [
    "HOST",
    "PARTIES",
    "Keys",
    "Recv",
    "Send",
    "free_ports",
    "introduce",
    "make_keys",
    "meet",
    "network_ends",
    "party_ends",
    "stoffel_config",
    "stoffel_mesh",
]

HOST = "127.0.0.1"
PARTIES = 3  # the default number of identities `make_keys` writes

Send = Callable[[bytes], Awaitable[None]]
Recv = Callable[[], Awaitable[bytes]]


class _Conn(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes: ...


ConnT = TypeVar("ConnT", bound=_Conn)


async def meet(me: int, conns: dict[int, ConnT], arrived: asyncio.Queue[ConnT]) -> dict[int, tuple[Send, Recv]]:
    """The rest of a bare party's mesh, for a baseline's ``open_party``: `conns` holds the higher parties (dialled,
    and each told who we are: `introduce`); every lower party dials us (`arrived`) and says who it is in its first
    message. Returns ``{peer: (send, recv)}``, and adds the lower parties to `conns` (the caller closes them all)."""
    for _ in range(me):
        conn = await arrived.get()
        conns[int.from_bytes(await conn.recv(), "big")] = conn
    return {peer: (conn.send, conn.recv) for peer, conn in sorted(conns.items())}


async def introduce(conn: _Conn, me: int) -> None:
    """Tell a party we dialled who we are (what `meet` reads on the other side)."""
    await conn.send(me.to_bytes(4, "big"))


class Keys(NamedTuple):
    """Certificate and key files (plain strings: picklable for child processes) and fingerprints."""

    certs: tuple[str, ...]
    keys: tuple[str, ...]
    fingerprints: tuple[str, ...]


def make_keys(folder: Path, n: int = PARTIES) -> Keys:
    """A key pair and certificate for each of `n` parties in `folder`."""
    certs, key_files, fingerprints = [], [], []
    for i in range(n):
        identity = keys.generate_identity(f"party{i}")
        cert, key = folder / f"party{i}.pem", folder / f"party{i}.key"
        keys.write_identity(identity, cert, key)
        certs.append(str(cert))
        key_files.append(str(key))
        fingerprints.append(identity.fingerprint)
    return Keys(tuple(certs), tuple(key_files), tuple(fingerprints))


def free_ports(n: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> list[int]:
    """`n` ports free on 127.0.0.1 now (TCP by default, `socket.SOCK_DGRAM` for UDP)."""
    socks = [socket.socket(socket.AF_INET, kind) for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stoffel_config(
    transport: str, k: Keys, ports: Sequence[int], me: int, options: Mapping[str, Any] | None = None
) -> Config:
    """What `local_network(n, transport=...)` builds, with these keys and ports (usable in a child process too)."""
    parties = tuple(
        Node(PartyId(i), Address(HOST, port), fingerprint=k.fingerprints[i], cert=Path(k.certs[i]))
        for i, port in enumerate(ports)
    )
    return Config(
        transport=transport,
        party_id=me,
        parties=parties,
        tls=TLSConfig(k.certs[me], k.keys[me]),
        transport_options={transport: dict(options)} if options else {},
    )


@contextlib.asynccontextmanager
async def stoffel_mesh(configs: Sequence[Config]) -> AsyncIterator[list[dict[int, tuple[Send, Recv]]]]:
    """A party per config, all in this process; ``ends[me][peer]`` is ``(send, recv)`` on me's side of the link."""
    async with contextlib.AsyncExitStack() as stack:
        yield network_ends(await asyncio.gather(*(stack.enter_async_context(open_network(c)) for c in configs)))


def network_ends(nets: Sequence[Network]) -> list[dict[int, tuple[Send, Recv]]]:
    """``ends[me][peer]`` is ``(send, recv)`` on party me's side of its link to peer, over `Network`s."""
    return [party_ends(net, len(nets)) for net in nets]


def party_ends(net: Network, parties: int) -> dict[int, tuple[Send, Recv]]:
    """``{peer: (send, recv)}`` on `net`'s side of its link to each of the other `parties` - 1 parties."""
    me = net.local_party_id
    return {
        p: (functools.partial(net.send, p), functools.partial(net.receive_from, p)) for p in range(parties) if p != me
    }
