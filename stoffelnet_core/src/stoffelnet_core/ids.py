"""Identities of the members of a network: party ids, client ids, roles and nodes. No I/O here."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import NewType

import attrs

__all__ = ["Address", "ClientId", "ClientType", "Node", "PartyId", "parse_address"]

PartyId = NewType("PartyId", int)
"""A party's index ``0..n-1``, fixed by the configuration (never by connection order or key order)."""

ClientId = NewType("ClientId", int)
"""A client's id, stable for the client's identity (its key), not for its port."""


class ClientType(enum.Enum):
    """The role a peer plays on a connection (the seed's names)."""

    SERVER = "server"  # a party
    CLIENT = "client"


@attrs.frozen
class Address:
    """A host and port; ``str()`` gives ``host:port`` (``[v6]:port`` for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse ``host:port`` or ``[v6]:port``; raises `ValueError` saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected 'host:port', got {text!r}")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected '[ipv6]:port', got {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"expected 'host:port' (IPv6 as '[addr]:port'), got {text!r}")
    if not host:
        raise ValueError(f"missing host in {text!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 0..65535 in {text!r}")
    return Address(host, int(port_text))


@attrs.frozen
class Node:
    """A party as the configuration knows it: where to reach it and which key proves it."""

    id: PartyId
    address: Address | None = None
    listen: Address | None = None  # where the party binds, when that differs from `address` (NAT, containers)
    fingerprint: str | None = None  # "sha256:<hex>" of the SubjectPublicKeyInfo
    cert: Path | None = None  # the party's certificate file: pins its key too, and TLS trusts exactly it

    @property
    def bind_address(self) -> Address | None:
        """Where this party listens: `listen` when given, else `address`."""
        return self.listen if self.listen is not None else self.address
