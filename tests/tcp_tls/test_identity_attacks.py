"""Identity attacks on a running tcp-tls network: every one is refused, logged with its reason, delivers nothing.

DESIGN.md "Who talks to whom": a connection is accepted as party i only when the peer proved possession of party
i's pinned key; the dialer checks whom it reached; a client is never admitted as a party; a mismatch is refused
with `AuthenticationError`, logged, and nothing from it is delivered. After every attack the victim network must be
exactly as before: every existing connection works (a broadcast round and a client round trip, with every inbox
empty afterwards) and each party still admits a fresh legitimate connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from stoffelnet_core import codec, errors
from stoffelnet_core.config import Config, TLSConfig
from stoffelnet_core.frames import Handshake
from stoffelnet_core.ids import Address
from stoffelnet_core.mux import DATA, HEADER
from stoffelnet_core.testing.hostile import (
    SPARE_CLIENT,
    TIMEOUT,
    LogWatch,
    Victim,
    assert_accepts_fresh_client,
    assert_healthy,
    caplog_messages,
    data_frame,
    dial_party,
    handshake_frame,
    make_identity,
    mux_frame,
)

from .conftest import ALPN_CLIENT, ALPN_PARTY, RawPeer, client_context, expect_refused_in_tls, server_context

TLS_LOG = "stoffelnet.tcp_tls"
NETWORK_LOG = "stoffelnet.network"
PEER_LOG = "stoffelnet.peer"


async def assert_unaffected(v: Victim) -> None:
    await assert_healthy(v)
    await assert_accepts_fresh_client(v)


# -- refused in TLS, before a byte of stoffelnet is read ---------------------------------------------------------
async def test_unpinned_dialer_is_refused_in_tls(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """1. A dialer whose certificate nobody pinned: the listener's TLS refuses it; it never gets a byte."""
    stranger = make_identity(tmp_path, "stranger")
    ctx = client_context(stranger.cert, stranger.key, victim.party_certs, ALPN_PARTY)
    got = await expect_refused_in_tls(victim.address(1), ctx, then=handshake_frame("server", 0) + data_frame(0, 0))
    assert got == b""
    await logwatch.wait_for("refused a connection", "certificate is not pinned here", logger=TLS_LOG)
    assert any("certificate is not pinned here" in m for m in caplog_messages(caplog, TLS_LOG))
    await assert_unaffected(victim)


async def test_plain_tcp_to_the_tls_port_is_refused(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture
) -> None:
    """6. Plain TCP (an HTTP request, then binary garbage) on the TLS port: closed, logged as not TLS."""
    address = victim.address(2)
    for payload in [b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 4]:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            port = writer.get_extra_info("sockname")[1]
            try:
                writer.write(payload)
                with contextlib.suppress(OSError):
                    assert await reader.read() == b""  # nothing but EOF (or a reset) comes back
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        await logwatch.wait_for(f"refused a connection from 127.0.0.1:{port}: ", "does not speak TLS", logger=TLS_LOG)
    assert sum("does not speak TLS" in m for m in caplog_messages(caplog, TLS_LOG)) == 2
    await assert_unaffected(victim)


async def test_tls_client_without_certificate_is_refused(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture
) -> None:
    """7. A TLS 1.3 client that presents no certificate (and verifies nothing): refused in TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([ALPN_CLIENT])
    got = await expect_refused_in_tls(victim.address(0), ctx, then=handshake_frame("client", 0) + data_frame(0, 0))
    assert got == b""
    await logwatch.wait_for("refused a connection", "presented no certificate", logger=TLS_LOG)
    assert any("presented no certificate" in m for m in caplog_messages(caplog, TLS_LOG))
    await assert_unaffected(victim)


async def test_openssl_s_client_without_certificate_is_refused(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture
) -> None:
    """8. A real external TLS stack, `openssl s_client -tls1_3` with no certificate: refused and logged."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command-line tool is not installed (needed to dial with an external TLS stack)")
    address = victim.address(1)
    proc = await asyncio.create_subprocess_exec(
        openssl,
        "s_client",
        "-connect",
        f"{address.host}:{address.port}",
        "-tls1_3",
        "-alpn",
        ALPN_CLIENT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("openssl s_client did not finish")
    assert b"TLSv1.3" in out + err, (out + err).decode(errors="replace")  # it did reach the TLS 1.3 handshake
    await logwatch.wait_for("refused a connection", "presented no certificate", logger=TLS_LOG)
    assert any("presented no certificate" in m for m in caplog_messages(caplog, TLS_LOG))
    await assert_unaffected(victim)


# -- a pinned key claiming another identity in the Handshake ------------------------------------------------------
@attrs.frozen
class Claim:
    key: str  # whose key the attacker holds: "party0".."party2", "client0", "client1"
    role: str  # what its Handshake claims
    claimed: int
    reason: str  # what the refusal must say


def _tls_of(v: Victim, who: str) -> TLSConfig:
    return v.party_tls(int(who[5:])) if who.startswith("party") else v.client_tls(int(who[6:]))


@pytest.mark.parametrize(
    "claim",
    [
        # 2. party 2's real key, dialing as "party 1" (1 < 2, so dialing party 2 is what party 1 would do)
        Claim("party2", "server", 1, "peer claiming to be party 1 proved the key of party 2"),
        Claim("party0", "server", 1, "peer claiming to be party 1 proved the key of party 0"),
        # 4. an allowed client's key claiming to be a party
        Claim("client0", "server", 0, "peer claiming to be party 0 proved the key of client 0"),
        Claim("client1", "server", 1, "peer claiming to be party 1 proved the key of client 1"),
        # a party's key posing as a client, and one client posing as another
        Claim("party1", "client", SPARE_CLIENT, "peer claiming to be client 1 proved the key of party 1"),
        Claim("client0", "client", SPARE_CLIENT, "peer claiming to be client 1 proved the key of client 0"),
        # party 0's own key, while party 0 is connected: a second connection must not displace the first
        Claim("party0", "server", 0, "0 is already connected; refusing a second connection"),
        Claim("party0", "server", 7, "peer claimed party id 7, but this network has parties 0..2"),
    ],
    ids=lambda c: f"{c.key}-claims-{c.role}{c.claimed}",
)
async def test_pinned_key_claiming_another_identity_is_refused(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture, claim: Claim
) -> None:
    """2/4. TLS passes (the key is pinned) but the Handshake claim does not match it: AuthenticationError.

    The attacker pipelines application data right behind its Handshake; none of it may reach an application, and
    the party never answers with its own Handshake.
    """
    tls = _tls_of(victim, claim.key)
    alpn = ALPN_PARTY if claim.role == "server" else ALPN_CLIENT
    peer = await RawPeer.connect(victim.address(2), client_context(tls.cert, tls.key, victim.party_certs, alpn))
    peer.send(handshake_frame(claim.role, claim.claimed) + data_frame(0, 0) + data_frame(1, 0))
    got = await peer.expect_closed()
    assert _control_frames(got) == [], "the party answered an unauthenticated peer"
    record = await logwatch.wait_for("refused a connection", claim.reason, logger=NETWORK_LOG)
    assert "AuthenticationError" in record.getMessage()
    assert any("AuthenticationError" in m and claim.reason in m for m in caplog_messages(caplog, PEER_LOG))
    assert victim.parties[2].clients() == [0]
    await assert_unaffected(victim)


def _control_frames(data: bytes) -> list[bytes]:
    """Payloads of the complete mux DATA frames on control channel 0 in `data`."""
    found, pos = [], 0
    while pos + HEADER.size <= len(data):
        kind, channel, length = HEADER.unpack_from(data, pos)
        pos += HEADER.size
        if kind == DATA:
            if channel == 0:
                found.append(data[pos : pos + length])
            pos += length
    return found


# -- the dialer checks whom it reached ----------------------------------------------------------------------------
class FakeListener:
    """Plain TCP upgraded to TLS by hand (so every dial is counted, even one whose TLS fails), presenting `tls`.

    With `answer`, it reads the dialer's Handshake and replies with that claim, then waits for the dialer to hang up.
    """

    def __init__(self, tls: TLSConfig, answer: Handshake | None) -> None:
        self._ctx = server_context(tls.cert, tls.key)
        self._ctx.set_alpn_protocols([ALPN_PARTY, ALPN_CLIENT])
        self._answer = answer
        self.dials = 0
        self.claims: list[Handshake] = []
        self._handlers: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.dials += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(TIMEOUT):
                await writer.start_tls(self._ctx)
                if self._answer is None:
                    return
                decoder = codec.FrameDecoder()
                while not self.claims:
                    kind, channel, length = HEADER.unpack(await reader.readexactly(HEADER.size))
                    body = await reader.readexactly(length) if kind == DATA else b""
                    if kind == DATA and channel == 0:
                        self.claims += [e for e, _ in decoder.feed(body) if isinstance(e, Handshake)]
                writer.write(mux_frame(DATA, 0, codec.encode(self._answer)))
                await reader.read()  # until the dialer, having refused us, hangs up
        except (OSError, asyncio.IncompleteReadError):
            pass  # the dialer refused our certificate or hung up: that is the point
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Address]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield Address("127.0.0.1", server.sockets[0].getsockname()[1])
        finally:
            server.close()
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*self._handlers, return_exceptions=True)
                await server.wait_closed()


def _redirected(v: Victim, dialer: str, fake: Address) -> Config:
    """`dialer`'s config (party 0 or the spare client) with party 1's address pointing at `fake`, many retries."""
    base = v.base if dialer == "party0" else v.client_config(SPARE_CLIENT)
    parties = tuple(attrs.evolve(n, address=fake) if n.id == 1 else n for n in base.parties)
    tls = v.party_tls(0) if dialer == "party0" else v.client_tls(SPARE_CLIENT)
    return attrs.evolve(base, parties=parties, tls=tls, max_retries=5)


@pytest.mark.parametrize("dialer", ["party0", "client1"])
@pytest.mark.parametrize(
    ("presented", "reason"),
    [
        # 3. party 2's certificate, answering the Handshake as party 1
        ("party2", "peer claiming to be party 1 proved the key of party 2"),
        # 5. a key nobody pinned, at party 1's address: the dialer's TLS refuses it
        ("stranger", "not pinned here"),
    ],
    ids=["party2-key-answers-as-party1", "stranger-key"],
)
async def test_dialer_refuses_an_impostor_listener_at_once(
    victim: Victim, tmp_path: Path, dialer: str, presented: str, reason: str
) -> None:
    """3/5. The dialer raises AuthenticationError on its first attempt: an impostor is not a reason to retry."""
    tls = make_identity(tmp_path, "stranger") if presented == "stranger" else victim.party_tls(2)
    fake = FakeListener(tls, answer=Handshake("server", 1, nonce=b"f" * 16))
    async with fake.running() as address:
        with pytest.raises(errors.AuthenticationError, match=reason):
            async with asyncio.timeout(TIMEOUT):
                await dial_party(_redirected(victim, dialer, address), 1)
    assert fake.dials == 1, f"the dialer retried an impostor ({fake.dials} dials, max_retries=5)"
    if presented == "party2":
        expected = ("server", 0) if dialer == "party0" else ("client", SPARE_CLIENT)
        assert [(c.role, c.id) for c in fake.claims] == [expected]
    else:
        assert fake.claims == []  # TLS failed: the dialer never sent its Handshake to the stranger
    await assert_unaffected(victim)
