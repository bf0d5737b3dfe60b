"""Identity attacks on a running quic network: every one is refused, logged with its reason, delivers nothing.

The same attacks as tests/tcp_tls/test_identity_attacks.py, where QUIC differs: neither engine can make the dialer
prove a key in TLS (aioquic only through a private test flag that checks nothing; qh3's server cannot ask for a
client certificate at all), so any QUIC client completes the QUIC handshake with a party, and the dialer's key is
proven only by core's `Proof` (its signature over the acceptor's fresh nonce and key, and over the dialer's claim).
So each attacker here gets as far as a real QUIC connection and a Handshake answered with a nonce, and must be
stopped by the Proof check, the pin check or the duplicate check: with `AuthenticationError` (or `FramingError` for
a protocol fault) in the logs, no byte of it delivered, and the rest of the mesh unaffected (a broadcast round, a
client round trip and a fresh client after every attack).

The acceptor's key is proven by the engine's TLS (CertificateVerify) and then pinned by core: a dialer that reaches
an impostor raises `AuthenticationError` at once, never retries, and never signs a proof for it.

Every test runs once per engine (`ON_EVERY_ENGINE`): the victim parties and the dialers built from their config run
aioquic, then qh3. The attackers and the impostor listeners are raw aioquic either way (QUIC interoperates), so on
qh3 these are also aioquic clients and servers talking to qh3 ones.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from stoffelnet_core import errors
from stoffelnet_core.config import Config, TLSConfig
from stoffelnet_core.frames import Ack, Close, Handshake, Proof
from stoffelnet_core.ids import Address, ClientType
from stoffelnet_core.proof import proof_message
from stoffelnet_core.testing.hostile import (
    SPARE_CLIENT,
    TIMEOUT,
    LogWatch,
    Victim,
    assert_unaffected,
    caplog_messages,
    control_frame,
    data_frame,
    dial_party,
    handshake_frame,
    make_identity,
)
from stoffelnet_core.transport import Credentials, TransportContext
from stoffelnet_quic.transport import QuicPipe, QuicTransport

from .conftest import ALPN_CLIENT, ALPN_PARTY, ON_EVERY_ENGINE, FakeQuicListener, RawQuicPeer, sign

pytestmark = ON_EVERY_ENGINE

NETWORK_LOG = "stoffelnet.network"
PEER_LOG = "stoffelnet.peer"


def _der(tls: TLSConfig) -> bytes:
    return x509.load_pem_x509_certificate(Path(tls.cert).read_bytes()).public_bytes(serialization.Encoding.DER)


# -- the engine's hook the transport relies on -----------------------------------------------------------------------
async def test_the_engine_still_exposes_the_acceptors_certificate(victim: Victim, engine: str) -> None:
    """The dialer pins the certificate whose key the acceptor proved in TLS, read through the engine: aioquic's
    private ``tls._peer_certificate``, qh3's ``QuicConnection.get_peercert()``. After a real handshake it must be the
    party's DER certificate, or every QUIC dial would be refused as unproven after an engine upgrade."""
    spare = victim.client_tls(SPARE_CLIENT)
    transport = QuicTransport(
        TransportContext(options={"engine": engine}, credentials=Credentials(str(spare.cert), str(spare.key)))
    )
    pipe = await transport.dial(victim.address(0), role=ClientType.CLIENT)
    assert isinstance(pipe, QuicPipe)
    try:
        quic = pipe._quic
        if engine == "aioquic":
            assert hasattr(quic.tls, "_peer_certificate"), "aioquic moved tls._peer_certificate"
        else:
            assert callable(getattr(quic, "get_peercert", None)), "qh3 no longer has QuicConnection.get_peercert()"
        assert transport.engine.peer_certificate(quic) == _der(victim.party_tls(0))
        assert pipe.info.peer_certificate == _der(victim.party_tls(0))
    finally:
        pipe.abort()
    # ... and what the transport hands core: the dialer holds the acceptor's proven certificate, the acceptor has
    # none (the dialer proves itself in core's handshake instead).
    dialer = victim.client.connection(0).info
    assert (dialer.transport, dialer.peer_certificate, dialer.dialer_proof) == ("quic", _der(victim.party_tls(0)), True)
    acceptor = victim.parties[0].client_connection(0).info
    assert (acceptor.peer_certificate, acceptor.dialer_proof) == (None, True)


# -- a proof that verifies, from a key that does not match the claim -----------------------------------------------
@attrs.frozen
class Claim:
    key: str  # whose key signs the Proof (and is shown in QUIC): "party0".."party2", "client0", "client1", "stranger"
    role: str  # what the Handshake claims
    claimed: int
    reason: str  # what the refusal must say
    alpn: str | None = None  # default: the role's own


CLAIMS = [
    # 1. a stranger's key: its proof verifies, but nobody pinned the key
    Claim("stranger", "server", 1, "peer claiming to be party 1 proved an unpinned key"),
    Claim("stranger", "client", SPARE_CLIENT, "peer claiming to be client 1 proved an unpinned key"),
    # 2. party 2's real key, signing while claiming to be party 1 (party 1 dials party 2: the claim is plausible)
    Claim("party2", "server", 1, "peer claiming to be party 1 proved the key of party 2"),
    Claim("party0", "server", 1, "peer claiming to be party 1 proved the key of party 0"),
    # 3. an allowed client's key claiming a party id (over either ALPN: ALPN is not an identity)
    Claim("client0", "server", 0, "peer claiming to be party 0 proved the key of client 0"),
    Claim("client1", "server", 1, "peer claiming to be party 1 proved the key of client 1"),
    # ... and over the client ALPN: refused because the role it negotiated is not the one it claims
    Claim(
        "client0",
        "server",
        0,
        "peer negotiated 'stoffelnet/1-client' in TLS but claims the role server",
        alpn=ALPN_CLIENT,
    ),
    # a party's key posing as a client, and one client posing as another
    Claim("party1", "client", SPARE_CLIENT, "peer claiming to be client 1 proved the key of party 1"),
    Claim("client0", "client", SPARE_CLIENT, "peer claiming to be client 1 proved the key of client 0"),
    # party 0's own key while party 0 is connected: a second connection must not displace the first
    Claim("party0", "server", 0, "party 0 is already connected; refusing a second connection"),
    Claim("party0", "server", 7, "peer claimed party id 7, but this network has parties 0..2"),
    Claim("party2", "server", 2, "party 2 dialed party 2, but the lower id dials"),
]


def _tls_of(v: Victim, who: str, tmp_path: Path) -> TLSConfig:
    if who == "stranger":
        return make_identity(tmp_path, "stranger")
    return v.party_tls(int(who[5:])) if who.startswith("party") else v.client_tls(int(who[6:]))


@pytest.mark.parametrize(
    "claim", CLAIMS, ids=lambda c: f"{c.key}-claims-{c.role}{c.claimed}" + ("-client-alpn" if c.alpn else "")
)
async def test_proven_key_claiming_another_identity_is_refused(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture, tmp_path: Path, claim: Claim
) -> None:
    """The attacker holds `claim.key` and proves it (a correct Proof over party 2's nonce and key), but the key is not
    the one pinned for the claim: AuthenticationError. Application data pipelined behind the Proof is never
    delivered, and the party says nothing after its Handshake."""
    tls = _tls_of(victim, claim.key, tmp_path)
    alpn = claim.alpn or (ALPN_PARTY if claim.role == "server" else ALPN_CLIENT)
    peer = await RawQuicPeer.connect(victim.address(2), tls, alpn)
    nonce = os.urandom(16)
    peer.send(handshake_frame(claim.role, claim.claimed, nonce))
    reply = await peer.read_handshake()
    assert (reply.role, reply.id, len(reply.nonce)) == ("server", 2, 16)
    proof = sign(tls, reply.nonce, victim.fingerprint(2), claim.role, claim.claimed, nonce)
    peer.send(control_frame(proof) + data_frame(0, 0) + data_frame(1, 0))
    assert await peer.expect_closed() is not None  # the party closed the QUIC connection
    assert peer.control == [reply], "the party said more than its Handshake to an unauthenticated peer"
    assert peer.protocol.reader.app_bytes == 0
    record = await logwatch.wait_for("refused a connection", claim.reason, logger=NETWORK_LOG)
    assert "AuthenticationError" in record.getMessage()
    assert any("AuthenticationError" in m and claim.reason in m for m in caplog_messages(caplog, PEER_LOG))
    assert victim.parties[2].clients() == [0]
    await assert_unaffected(victim)


# -- no proof, or a broken one --------------------------------------------------------------------------------------
def _ed25519_certificate() -> tuple[bytes, ed25519.Ed25519PrivateKey]:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed25519")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER), key


def _ed25519_proof(message: bytes) -> Proof:
    der, key = _ed25519_certificate()
    return Proof(der, key.sign(message))


def _ecdsa_signature_of(tls: TLSConfig, message: bytes) -> bytes:
    key = serialization.load_pem_private_key(Path(tls.key).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


# Each case: what the dialer (pinned client 1, QUIC certificate and all) sends once the party answered its
# Handshake, as a function of that answer; and the refusal (error type and reason) the party must log.
NO_PROOF: dict[str, tuple[str, str]] = {
    "data-instead-of-a-proof": ("FramingError", "data frame before the handshake completed"),
    "close-instead-of-a-proof": ("FramingError", "Close before the handshake completed"),
    "ack-instead-of-a-proof": ("FramingError", "Ack before the handshake completed"),
    "proof-with-an-unreadable-certificate": ("AuthenticationError", "carries an unreadable certificate"),
    "proof-with-an-empty-signature": ("AuthenticationError", "does not verify: it does not hold the key"),
    "proof-signed-with-another-key-than-its-certificate": (
        "AuthenticationError",
        "does not verify: it does not hold the key",
    ),
    "proof-with-an-ed25519-certificate": ("AuthenticationError", "holds a Ed25519PublicKey, not an ECDSA key"),
}


def _no_proof_payload(case: str, v: Victim, reply: Handshake, nonce: bytes) -> bytes:
    own = v.client_tls(SPARE_CLIENT)
    genuine = sign(own, reply.nonce, v.fingerprint(1), "client", SPARE_CLIENT, nonce)
    message = proof_message(reply.nonce, v.fingerprint(1), "client", SPARE_CLIENT, nonce)
    if case == "data-instead-of-a-proof":
        return data_frame(0, 0)
    if case == "close-instead-of-a-proof":
        return control_frame(Close("bye"))
    if case == "ack-instead-of-a-proof":
        return control_frame(Ack(0, 0))
    if case == "proof-with-an-unreadable-certificate":
        return control_frame(Proof(b"\x30\x03not a certificate", genuine.signature))
    if case == "proof-with-an-empty-signature":
        return control_frame(Proof(genuine.certificate, b""))
    if case == "proof-signed-with-another-key-than-its-certificate":
        # client 1's certificate, but the signature of party 0's key: holding a certificate proves nothing
        return control_frame(Proof(genuine.certificate, _ecdsa_signature_of(v.party_tls(0), message)))
    if case == "proof-with-an-ed25519-certificate":
        return control_frame(_ed25519_proof(message))
    raise AssertionError(case)


@pytest.mark.parametrize("case", list(NO_PROOF), ids=list(NO_PROOF))
async def test_dialer_without_a_valid_proof_is_refused(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """5. The pinned spare client sends its Handshake, is answered, then sends anything but a valid Proof (data
    behind it in the same write): refused with the logged reason, nothing delivered."""
    kind, reason = NO_PROOF[case]
    peer = await RawQuicPeer.connect(victim.address(1), victim.client_tls(SPARE_CLIENT), ALPN_CLIENT)
    nonce = os.urandom(16)
    peer.send(handshake_frame("client", SPARE_CLIENT, nonce))
    reply = await peer.read_handshake()
    peer.send(_no_proof_payload(case, victim, reply, nonce) + data_frame(0, 0) + data_frame(1, 0))
    assert await peer.expect_closed() is not None
    assert peer.control == [reply]
    record = await logwatch.wait_for(f"closing connection to 127.0.0.1:{peer.port}: {kind}: ", logger=PEER_LOG)
    assert reason in record.getMessage()
    await logwatch.wait_for("party 1 refused a connection", f"{kind}: ", reason, logger=NETWORK_LOG)
    assert any(kind in m and reason in m for m in caplog_messages(caplog, PEER_LOG))
    assert victim.parties[1].clients() == [0]
    await assert_unaffected(victim)


async def test_proof_before_any_handshake_is_refused(victim: Victim, logwatch: LogWatch) -> None:
    """A Proof (even a well-formed one) as the first frame: nobody asked for it; the party never answers."""
    own = victim.client_tls(SPARE_CLIENT)
    peer = await RawQuicPeer.connect(victim.address(1), own, ALPN_CLIENT)
    proof = sign(own, b"n" * 16, victim.fingerprint(1), "client", SPARE_CLIENT, b"n" * 16)
    peer.send(control_frame(proof) + data_frame(0, 0))
    assert await peer.expect_closed() is not None
    assert peer.control == []
    await logwatch.wait_for(
        f"closing connection to 127.0.0.1:{peer.port}: FramingError: a Proof that nobody asked for", logger=PEER_LOG
    )
    await assert_unaffected(victim)


async def test_second_handshake_while_a_proof_is_awaited_is_refused(victim: Victim) -> None:
    """Session's rule: "a second Handshake is an error". Over QUIC the acceptor is still HANDSHAKING while it awaits
    the Proof, and the state check lets a second Handshake through: got a second answer, expected a refusal."""
    peer = await RawQuicPeer.connect(victim.address(1), victim.client_tls(SPARE_CLIENT), ALPN_CLIENT)
    try:
        peer.send(handshake_frame("client", SPARE_CLIENT))
        await peer.read_handshake()
        peer.send(handshake_frame("client", 0))  # and now claims another identity, under the same nonce
        async with asyncio.timeout(TIMEOUT):
            while peer.protocol.terminated is None and len(peer.control) < 2:
                peer.protocol.changed.clear()
                await peer.protocol.changed.wait()
        assert len(peer.control) == 1, f"the party answered the second Handshake too: {peer.control}"
        assert peer.protocol.terminated is not None
    finally:
        await peer.close()


# -- replayed or relayed proofs: a valid signature over the wrong connection -------------------------------------
async def _authenticate(v: Victim, party: int, tls: TLSConfig, claimed: int) -> tuple[RawQuicPeer, bytes, Proof]:
    """A real dialer proving its key to `party` over QUIC; returns the peer, its Handshake frame and its Proof."""
    peer = await RawQuicPeer.connect(v.address(party), tls, ALPN_CLIENT)
    nonce = os.urandom(16)
    hello = handshake_frame("client", claimed, nonce)
    peer.send(hello)
    reply = await peer.read_handshake()
    proof = sign(tls, reply.nonce, v.fingerprint(party), "client", claimed, nonce)
    peer.send(control_frame(proof))
    return peer, hello, proof


async def test_proof_replayed_from_an_earlier_connection_is_refused(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture
) -> None:
    """6. Client 1 authenticates for real (its message is delivered), then leaves. An attacker without its key
    replays that connection's Handshake and Proof byte for byte: the Proof signs the old connection's nonce, so the
    new connection refuses it."""
    party = victim.parties[1]
    first, hello, proof = await _authenticate(victim, 1, victim.client_tls(SPARE_CLIENT), SPARE_CLIENT)
    first.send(data_frame(0, 0, b"genuine"))
    assert await party.receive_from_client(SPARE_CLIENT, timeout=TIMEOUT) == (SPARE_CLIENT, b"genuine")
    first.send(control_frame(Close("done")))
    first.finish()
    await first.expect_closed()
    assert party.clients() == [0]

    attacker = await RawQuicPeer.connect(victim.address(1), None, ALPN_CLIENT)  # no certificate at all
    attacker.send(hello)
    reply = await attacker.read_handshake()
    attacker.send(control_frame(proof) + data_frame(0, 0))
    assert await attacker.expect_closed() is not None
    assert attacker.control == [reply]
    reason = "the dialer's proof signature does not verify"
    await logwatch.wait_for(f"closing connection to 127.0.0.1:{attacker.port}: AuthenticationError: {reason}")
    await logwatch.wait_for("party 1 refused a connection", "AuthenticationError", reason, logger=NETWORK_LOG)
    assert any(reason in m for m in caplog_messages(caplog, PEER_LOG))
    assert party.clients() == [0]
    await assert_unaffected(victim)


RELAYED: dict[str, Callable[[Victim, Handshake, bytes], tuple[bytes, str, int, bytes]]] = {
    # a man in the middle posing as party 0 to client 1, relaying party 1's nonce: client 1 signs party 0's key
    "signed-for-another-acceptor-key": lambda v, reply, nonce: (reply.nonce, v.fingerprint(0), SPARE_CLIENT, nonce),
    # the right acceptor and nonce, but the dialer nonce of another Handshake
    "signed-over-another-dialer-nonce": lambda v, reply, nonce: (reply.nonce, v.fingerprint(1), SPARE_CLIENT, b"x"),
    # the right connection, but signed for another claim (client 0's id) than the Handshake made
    "signed-for-another-claim": lambda v, reply, nonce: (reply.nonce, v.fingerprint(1), 0, nonce),
    # an old acceptor nonce: the proof of some earlier connection
    "signed-over-another-acceptor-nonce": lambda v, reply, nonce: (os.urandom(16), v.fingerprint(1), 1, nonce),
}


@pytest.mark.parametrize("case", list(RELAYED), ids=list(RELAYED))
async def test_proof_bound_to_another_connection_is_refused(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """A proof made by client 1's real key, but over a message of another connection: refused, nothing delivered."""
    own = victim.client_tls(SPARE_CLIENT)
    peer = await RawQuicPeer.connect(victim.address(1), own, ALPN_CLIENT)
    nonce = os.urandom(16)
    peer.send(handshake_frame("client", SPARE_CLIENT, nonce))
    reply = await peer.read_handshake()
    acceptor_nonce, fingerprint, claimed, dialer_nonce = RELAYED[case](victim, reply, nonce)
    peer.send(control_frame(sign(own, acceptor_nonce, fingerprint, "client", claimed, dialer_nonce)) + data_frame(0, 0))
    assert await peer.expect_closed() is not None
    assert peer.control == [reply]
    reason = "the dialer's proof signature does not verify"
    await logwatch.wait_for(f"closing connection to 127.0.0.1:{peer.port}: AuthenticationError: {reason}")
    assert any(reason in m for m in caplog_messages(caplog, PEER_LOG))
    assert victim.parties[1].clients() == [0]
    await assert_unaffected(victim)


# -- the dialer checks whom it reached ----------------------------------------------------------------------------
def _redirected(v: Victim, dialer: str, fake: Address, retries: int = 5) -> Config:
    """`dialer`'s config (party 0 or the spare client) with party 1's address pointing at `fake`, `retries` retries."""
    base = v.base if dialer == "party0" else v.client_config(SPARE_CLIENT)
    parties = tuple(attrs.evolve(n, address=fake) if n.id == 1 else n for n in base.parties)
    tls = v.party_tls(0) if dialer == "party0" else v.client_tls(SPARE_CLIENT)
    return attrs.evolve(base, parties=parties, tls=tls, max_retries=retries)


@pytest.mark.parametrize("dialer", ["party0", "client1"])
@pytest.mark.parametrize(
    ("presented", "reason"),
    [
        # 4. a key nobody pinned, at party 1's address, answering as party 1
        ("stranger", "peer claiming to be party 1 proved an unpinned key"),
        # party 2's certificate (and key), answering the Handshake as party 1
        ("party2", "peer claiming to be party 1 proved the key of party 2"),
    ],
    ids=["stranger-key", "party2-key-answers-as-party1"],
)
async def test_dialer_refuses_an_impostor_listener_at_once(
    victim: Victim, tmp_path: Path, dialer: str, presented: str, reason: str
) -> None:
    """4. The dialer raises AuthenticationError on its first attempt (an impostor is no reason to retry), and never
    signs a Proof for a listener it did not accept."""
    tls = make_identity(tmp_path, "stranger") if presented == "stranger" else victim.party_tls(2)
    fake = FakeQuicListener(tls, answer=Handshake("server", 1, nonce=b"f" * 16))
    async with fake.running() as address:
        started = time.monotonic()
        with pytest.raises(errors.AuthenticationError, match=reason):
            async with asyncio.timeout(TIMEOUT):
                await dial_party(_redirected(victim, dialer, address), 1)
        elapsed = time.monotonic() - started
    assert fake.dials == 1, f"the dialer retried an impostor ({fake.dials} dials, max_retries=5)"
    expected = ("server", 0) if dialer == "party0" else ("client", SPARE_CLIENT)
    assert [(c.role, c.id) for c in fake.claims] == [expected]
    assert fake.proofs == [], "the dialer signed a proof for an impostor"
    assert elapsed < TIMEOUT / 2
    await assert_unaffected(victim)


def _stolen_certificate(v: Victim, tmp_path: Path) -> TLSConfig:
    """Party 1's certificate (public: every member has it) with a stranger's key: what a thief can present."""
    stranger = make_identity(tmp_path, "thief")
    return TLSConfig(v.party_tls(1).cert, stranger.key)


@pytest.mark.parametrize("dialer", ["party0", "client1"])
async def test_dialer_never_talks_to_a_listener_showing_a_pinned_certificate_without_its_key(
    victim: Victim, tmp_path: Path, dialer: str
) -> None:
    """The acceptor's proof is aioquic's CertificateVerify check: a listener that shows party 1's (public) certificate
    but signs with another key never completes the QUIC handshake, so the dialer sends it no Handshake and no Proof,
    and the dial fails within its bound."""
    fake = FakeQuicListener(_stolen_certificate(victim, tmp_path), answer=Handshake("server", 1, nonce=b"f" * 16))
    async with fake.running() as address:
        with pytest.raises((errors.AuthenticationError, errors.InitializationFailed)):
            async with asyncio.timeout(TIMEOUT):
                await dial_party(_redirected(victim, dialer, address, retries=2), 1)
    assert fake.dials >= 1
    assert fake.claims == [], "the dialer spoke stoffelnet to a listener whose key it could not prove"
    assert fake.proofs == []
    await assert_unaffected(victim)


async def test_listener_showing_a_pinned_certificate_without_its_key_is_refused_at_once(
    victim: Victim, tmp_path: Path
) -> None:
    fake = FakeQuicListener(_stolen_certificate(victim, tmp_path), answer=None)
    async with fake.running() as address:
        with pytest.raises(errors.AuthenticationError):
            async with asyncio.timeout(TIMEOUT):
                await dial_party(_redirected(victim, "party0", address, retries=2), 1)
    assert fake.dials == 1, f"the dialer retried an impostor ({fake.dials} dials)"
