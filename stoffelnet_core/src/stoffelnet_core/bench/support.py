"""What every baseline (and every benchmark) needs and writes the same way: keys, free ports, the send/receive pair.

For transport authors: a `stoffelnet_<name>/baseline.py` imports these instead of writing them again.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

from .. import keys

__all__ = ["HOST", "PARTIES", "Keys", "Recv", "Send", "free_ports", "make_keys"]

HOST = "127.0.0.1"
PARTIES = 3  # the default number of identities `make_keys` writes

Send = Callable[[bytes], Awaitable[None]]
Recv = Callable[[], Awaitable[bytes]]


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
