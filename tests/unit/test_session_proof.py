"""The dialer's proof (transports whose TLS does not authenticate the dialer): sans-IO, with real keys."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from stoffelnet_core import errors, identity, keys
from stoffelnet_core.frames import Handshake
from stoffelnet_core.ids import ClientType
from stoffelnet_core.session import (
    CONTROL_CHANNEL,
    CreditReturned,
    HandshakeCompleted,
    PeerIdentity,
    Session,
    SessionState,
)
from stoffelnet_core.transport import LinkInfo

PARTY0, PARTY1, STRANGER = (keys.generate_identity(n) for n in ("party0", "party1", "stranger"))
PINS = (PARTY0.fingerprint, PARTY1.fingerprint)


def _pair(dialer_key: keys.Identity) -> tuple[Session, Session]:
    # The dialer (party 0) sees party 1's certificate proven by the transport; the acceptor sees none.
    dialer_link = LinkInfo("quic", peer_certificate=PARTY1.certificate.public_bytes(Encoding.DER), dialer_proof=True)
    acceptor_link = LinkInfo("quic", dialer_proof=True)

    def dialer_verify(hs: Handshake, proven: str | None) -> PeerIdentity:
        return identity.verify_peer(hs, dialer_link, identity.Expectation(2, party=1, party_pins=PINS), proven)

    def acceptor_verify(hs: Handshake, proven: str | None) -> PeerIdentity:
        expect = identity.Expectation(2, accept_parties_below=1, party_pins=PINS)
        return identity.verify_peer(hs, acceptor_link, expect, proven)

    dialer = Session(
        role=ClientType.SERVER,
        local_id=0,
        dialer=True,
        verify=dialer_verify,
        nonce=b"d" * 16,
        dialer_proof=True,
        prover=lambda m: keys.sign_proof(dialer_key, m),
    )
    acceptor = Session(
        role=ClientType.SERVER,
        local_id=1,
        dialer=False,
        verify=acceptor_verify,
        nonce=b"a" * 16,
        dialer_proof=True,
        proof_verifier=keys.verify_proof,
        local_fingerprint=PARTY1.fingerprint,
    )
    return dialer, acceptor


def _move(src: Session, dst: Session) -> list[object]:
    """Deliver `src`'s control frames to `dst`; the events that matter here (flow-control credit left out)."""
    events: list[object] = []
    for channel, frame in src.data_to_send():
        assert channel == CONTROL_CHANNEL
        events += [e for e in dst.receive_data(channel, frame) if not isinstance(e, CreditReturned)]
    return events


def test_the_dialer_opens_only_after_the_acceptor_accepted_its_proof() -> None:
    dialer, acceptor = _pair(PARTY0)
    dialer.initiate()
    assert _move(dialer, acceptor) == []  # the acceptor answers with its nonce, and waits for the proof
    assert _move(acceptor, dialer) == []  # the dialer proves its key, and waits to be accepted
    assert dialer.state is SessionState.HANDSHAKING
    opened = _move(dialer, acceptor)  # the proof verifies: the acceptor opens and says so
    assert [type(e) for e in opened] == [HandshakeCompleted]
    assert acceptor.peer is not None
    assert acceptor.peer.fingerprint == PARTY0.fingerprint
    assert [type(e) for e in _move(acceptor, dialer)] == [HandshakeCompleted]
    state: SessionState = dialer.state  # changed by the Accepted just delivered
    assert state is SessionState.OPEN


def test_a_dialer_whose_proof_is_refused_never_opens() -> None:
    dialer, acceptor = _pair(STRANGER)  # claims party 0, but holds a key nobody pinned
    dialer.initiate()
    _move(dialer, acceptor)
    _move(acceptor, dialer)
    with pytest.raises(errors.AuthenticationError, match="unpinned key"):
        _move(dialer, acceptor)
    assert acceptor.state is SessionState.FAILED
    assert dialer.state is SessionState.HANDSHAKING  # no Accepted ever comes: the dialer is not connected
