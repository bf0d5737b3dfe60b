"""Deciding who a peer is: its Handshake claim checked against what the transport proved. No I/O here.

One function serves every transport. In-process transports (`LinkInfo.trusted`) are trusted by construction, so
the claim stands once it is in range and expected. Network transports must prove a key; until certificate
verification is wired in, a connection without a trusted link is refused, never accepted on its word.
"""

from __future__ import annotations

import attrs

from . import errors
from .frames import Handshake
from .ids import ClientType
from .session import PeerIdentity
from .transport import LinkInfo

__all__ = ["Expectation", "verify_peer"]


@attrs.frozen
class Expectation:
    """What this side will accept on one connection."""

    party_count: int
    client_count: int | None = None  # None: any client id (trusted in-process networks without an allowlist)
    party: int | None = None  # a dialer: exactly this party must answer
    accept_clients: bool = False
    accept_parties_below: int | None = None  # an acceptor: parties with a lower id dial us


def verify_peer(handshake: Handshake, info: LinkInfo, expect: Expectation) -> PeerIdentity:
    """Return the authenticated identity, or raise `AuthenticationError` saying what did not match."""
    try:
        role = ClientType(handshake.role)
    except ValueError:
        raise errors.AuthenticationError(f"peer claimed an unknown role {handshake.role!r}") from None
    claimed = handshake.id
    if claimed is None:
        raise errors.AuthenticationError(f"peer with role {role.value} claimed no id")
    if role is ClientType.SERVER:
        if not 0 <= claimed < expect.party_count:
            raise errors.AuthenticationError(
                f"peer claimed party id {claimed}, but this network has parties 0..{expect.party_count - 1}",
                peer=claimed,
            )
        if expect.party is not None and claimed != expect.party:
            raise errors.AuthenticationError(
                f"dialed party {expect.party} but reached a peer claiming to be party {claimed}", peer=claimed
            )
        if expect.party is None:
            if expect.accept_parties_below is None:
                raise errors.AuthenticationError(f"party {claimed} is not accepted here", peer=claimed)
            if claimed >= expect.accept_parties_below:
                raise errors.AuthenticationError(
                    f"party {claimed} dialed party {expect.accept_parties_below}, but the lower id dials",
                    peer=claimed,
                )
    else:
        if not expect.accept_clients:
            raise errors.AuthenticationError(f"a client (claimed id {claimed}) cannot connect here", peer=claimed)
        if expect.client_count is not None and not 0 <= claimed < expect.client_count:
            raise errors.AuthenticationError(
                f"client claimed id {claimed}, but only {expect.client_count} clients are allowed",
                peer=claimed,
            )
    if not info.trusted:
        raise errors.AuthenticationError(
            f"transport {info.transport!r} proved no identity for {role.value} {claimed}: refusing an unproven claim",
            peer=claimed,
        )
    return PeerIdentity(role, claimed, handshake.session_id)
