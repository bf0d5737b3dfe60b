"""The envelope kinds that travel inside frames. No I/O here.

Each envelope is a small frozen class; `codec` turns them into CBOR arrays ``[kind, field, ...]`` (arrays, not maps:
smaller and faster, and the kind number says how to read the rest). New kinds get new numbers behind
`PROTOCOL_VERSION`; an unknown kind is a `FramingError`.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import attrs

__all__ = [
    "PROTOCOL_VERSION",
    "Accepted",
    "Ack",
    "Close",
    "Data",
    "Envelope",
    "Handshake",
    "Kind",
    "Ping",
    "Proof",
    "Tag",
]

PROTOCOL_VERSION = 1
"""The wire protocol version carried in every Handshake; a peer with another major version is refused."""

Tag = int | bytes
"""An application tag: MPyC matches by program counter (int), others by message id (bytes)."""


class Kind(enum.IntEnum):
    """The first element of every encoded envelope."""

    HANDSHAKE = 0
    DATA = 1
    ACK = 2
    CLOSE = 3
    PROOF = 4
    ACCEPTED = 5
    PING = 6


@attrs.frozen
class Handshake:
    """The first frame each side sends: who it claims to be. Checked against the proven key before anything else."""

    role: str  # ClientType.value: "server" (a party) or "client"
    id: int | None  # the claimed party id; None for a client (its id comes from its key)
    version: int = PROTOCOL_VERSION
    session_id: bytes = b""  # random per process start: a new one means the peer restarted and lost its state
    nonce: bytes = b""  # fresh per connection, for proofs of key possession bound to this connection


class Data(NamedTuple):
    """One application message on `stream`, numbered `seq` (per sender and stream, from 0).

    A NamedTuple, not an attrs class like the other kinds: one is built per message received, and a tuple is
    several times cheaper to build. Still immutable and typed.
    """

    stream: int
    seq: int
    tag: Tag | None
    payload: bytes


@attrs.frozen
class Ack:
    """Cumulative acknowledgement: every message on `stream` up to and including `seq` was received."""

    stream: int
    seq: int


@attrs.frozen
class Close:
    """The sender will send nothing more on this connection; `reason` is for logs."""

    reason: str = ""


@attrs.frozen
class Proof:
    """The dialer's proof of key possession, for transports whose TLS does not authenticate the dialer (QUIC).

    `signature` signs `proof_message(...)`: the acceptor's fresh nonce and proven key bind it to this connection.
    """

    certificate: bytes  # DER
    signature: bytes


@attrs.frozen
class Accepted:
    """The acceptor verified the dialer's `Proof`: only now may the dialer consider the connection open."""


@attrs.frozen
class Ping:
    """Keep-alive: proof of life after a quiet interval; needs no answer (the peer sends its own)."""


Envelope = Handshake | Data | Ack | Close | Proof | Accepted | Ping
