"""Deciding who a peer is: its Handshake claim checked against the key the transport proved. No I/O here.

One function serves every transport. A network transport hands core the certificate whose key the peer proved it
holds (in TLS); the claimed role and id must be exactly the ones the configuration pins to that key. In-process
transports (`LinkInfo.trusted`) are trusted by construction, so there the claim stands once it is in range and
expected. A claim is never accepted on its word: no proven key, no connection.
"""

from __future__ import annotations

import hashlib

import attrs

from . import errors
from .frames import Handshake
from .ids import ClientType
from .session import PeerIdentity
from .transport import ALPN_CLIENT, ALPN_PARTY, LinkInfo

_ALPN_ROLES = {ALPN_PARTY: ClientType.SERVER, ALPN_CLIENT: ClientType.CLIENT}

__all__ = ["Expectation", "certificate_fingerprint", "verify_peer"]


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """One DER element at `pos`: (tag, start of its content, end); raises ValueError when malformed."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, size = der[pos], der[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4 or pos + count > len(der):
            raise ValueError("bad DER length")
        size = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + size > len(der):
        raise ValueError("DER element runs past the end")
    return tag, pos, pos + size


def certificate_fingerprint(der: bytes) -> str:
    """``sha256:<hex>`` of the SubjectPublicKeyInfo of a DER certificate (its exact bytes, as TLS sent them).

    Walks the DER by hand -- Certificate, tbsCertificate, then past [0] version, serial, signature algorithm,
    issuer, validity and subject -- so that this module needs no X.509 library. Raises ValueError when malformed.
    """
    tag, start, _ = _tlv(der, 0)
    if tag != 0x30:
        raise ValueError("not a certificate (no outer SEQUENCE)")
    tag, pos, tbs_end = _tlv(der, start)
    if tag != 0x30:
        raise ValueError("not a certificate (no tbsCertificate)")
    if der[pos] == 0xA0:  # explicit version
        pos = _tlv(der, pos)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        pos = _tlv(der, pos)[2]
    tag, _, end = _tlv(der, pos)
    if tag != 0x30 or end > tbs_end:
        raise ValueError("no SubjectPublicKeyInfo where a certificate has it")
    return "sha256:" + hashlib.sha256(der[pos:end]).hexdigest()


@attrs.frozen
class Expectation:
    """What this side will accept on one connection."""

    party_count: int
    client_count: int | None = None  # None: any client id (trusted in-process networks without an allowlist)
    party: int | None = None  # a dialer: exactly this party must answer
    accept_clients: bool = False
    accept_parties_below: int | None = None  # an acceptor: parties with a lower id dial us
    party_pins: tuple[str | None, ...] = ()  # fingerprint pinned for each party id
    client_pins: tuple[str, ...] = ()  # fingerprint of each client id (its position)


def verify_peer(handshake: Handshake, info: LinkInfo, expect: Expectation, proven: str | None = None) -> PeerIdentity:
    """Return the authenticated identity, or raise `AuthenticationError` saying what did not match.

    `proven` is the fingerprint a verified dialer `Proof` established; without it the transport's certificate is
    the proof.
    """
    try:
        role = ClientType(handshake.role)
    except ValueError:
        raise errors.AuthenticationError(f"peer claimed an unknown role {handshake.role!r}") from None
    claimed = handshake.id
    # ALPN names the dialer's role: check it where the peer is the dialer (we accept; no party is expected).
    alpn_role = _ALPN_ROLES.get(info.alpn or "") if expect.party is None else None
    if alpn_role is not None and alpn_role is not role:
        raise errors.AuthenticationError(
            f"peer negotiated {info.alpn!r} in TLS but claims the role {role.value} in its Handshake", peer=claimed
        )
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
    if info.trusted:
        return PeerIdentity(role, claimed, handshake.session_id)
    if proven is None:
        proven = _proven_fingerprint(info, role, claimed)
    _check_pin(proven, role, claimed, expect)
    return PeerIdentity(role, claimed, handshake.session_id, proven)


def _proven_fingerprint(info: LinkInfo, role: ClientType, claimed: int) -> str:
    if info.peer_certificate is None:
        raise errors.AuthenticationError(
            f"{role.value} {claimed} presented no certificate over {info.transport!r}: refusing an unproven claim",
            peer=claimed,
        )
    try:
        return certificate_fingerprint(info.peer_certificate)
    except (ValueError, IndexError) as exc:
        raise errors.AuthenticationError(f"{role.value} {claimed} presented an unreadable certificate: {exc}") from None


def _owner(fingerprint: str, expect: Expectation) -> str | None:
    """Who the configuration pins `fingerprint` to, for messages."""
    for party, pin in enumerate(expect.party_pins):
        if pin == fingerprint:
            return f"party {party}"
    if fingerprint in expect.client_pins:
        return f"client {expect.client_pins.index(fingerprint)}"
    return None


def _check_pin(proven: str, role: ClientType, claimed: int, expect: Expectation) -> None:
    if role is ClientType.SERVER:
        pinned = expect.party_pins[claimed] if claimed < len(expect.party_pins) else None
        if pinned is None:
            raise errors.AuthenticationError(
                f"no key is pinned for party {claimed} (parties[{claimed}].fingerprint or .cert): cannot prove it",
                peer=claimed,
            )
        if proven == pinned:
            return
    else:
        if proven in expect.client_pins and expect.client_pins.index(proven) == claimed:
            return
    owner = _owner(proven, expect)
    what = f"{role.value} {claimed}" if role is ClientType.CLIENT else f"party {claimed}"
    if owner is None:
        raise errors.AuthenticationError(f"peer claiming to be {what} proved an unpinned key {proven}", peer=claimed)
    raise errors.AuthenticationError(f"peer claiming to be {what} proved the key of {owner}", peer=claimed)
