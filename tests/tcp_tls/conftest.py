"""Shared helpers for the tcp-tls attack suites: a victim network, a hand-driven TLS peer, log and health checks.

The victim is a real 3-party tcp-tls network on 127.0.0.1 with one legitimate client connected. Keys come from
core's own `testing._make_keys` (as `local_network` makes them), with one allowlisted client more than is
connected: that spare identity is an *authenticated* attacker (its key is pinned, so TLS and the Handshake check
pass) without being refused as a duplicate of the connected legitimate client.

Every wait here is bounded by `TIMEOUT`; nothing sleeps to synchronise: log records and connection states are
awaited through events.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stoffelnet_core import codec
from stoffelnet_core.frames import Handshake
from stoffelnet_core.ids import Address
from stoffelnet_core.mux import DATA, HEADER, WINDOW_UPDATE
from stoffelnet_core.testing.hostile import (
    SPARE_CLIENT,
    TIMEOUT,
    Victim,
    handshake_frame,
    start_victim,
)

ALPN_PARTY = "stoffelnet/1-party"
ALPN_CLIENT = "stoffelnet/1-client"


# -- the victim --------------------------------------------------------------------------------------------------


# -- checks that the network is unaffected ------------------------------------------------------------------------


# -- a hand-driven TLS peer --------------------------------------------------------------------------------------
def client_context(cert: Path | None, key: Path | None, trusted: list[Path], alpn: str = ALPN_CLIENT) -> ssl.SSLContext:
    """A dialer's context as the transport builds it (TLS 1.3, pinned anchors, no hostname); `cert` None: no cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        assert key is not None
        ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cadata="".join(p.read_text() for p in trusted))
    ctx.set_alpn_protocols([alpn])
    return ctx


def server_context(cert: Path, key: Path, alpn: str = ALPN_PARTY) -> ssl.SSLContext:
    """A fake listener's context: presents `cert`, asks nothing of the dialer."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols([alpn])
    return ctx


class RawPeer:
    """One TLS connection to a party, driven byte by byte: the wire format is written here by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._control = codec.FrameDecoder()

    @classmethod
    async def connect(cls, address: Address, ctx: ssl.SSLContext) -> RawPeer:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(
                address.host, address.port, ssl=ctx, server_hostname="stoffelnet"
            )
        return cls(reader, writer)

    @classmethod
    async def authenticated_client(cls, v: Victim, party: int, client: int = SPARE_CLIENT) -> RawPeer:
        """An allowlisted client that completed the real Handshake with `party` (it has been answered)."""
        tls = v.client_tls(client)
        peer = await cls.connect(v.address(party), client_context(tls.cert, tls.key, v.party_certs))
        peer.send(handshake_frame("client", client))
        reply = await peer.read_handshake()
        assert (reply.role, reply.id) == ("server", party)
        return peer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_handshake(self) -> Handshake:
        """Read mux frames until the peer's Handshake completes on channel 0 (window updates are skipped)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                kind, channel, length = HEADER.unpack(await self.reader.readexactly(HEADER.size))
                if kind == WINDOW_UPDATE:
                    continue
                assert (kind, channel) == (DATA, 0), f"unexpected mux frame {kind} on channel {channel}"
                for envelope, _ in self._control.feed(await self.reader.readexactly(length)):
                    assert isinstance(envelope, Handshake), envelope
                    return envelope

    async def expect_closed(self) -> bytes:
        """Read until the party ends the connection (EOF, reset or a TLS alert); returns what arrived before."""
        got = bytearray()
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except (OSError, asyncio.IncompleteReadError):  # ssl.SSLError is an OSError
                    break
                if not chunk:
                    break
                got += chunk
        await self.close()
        return bytes(got)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(TIMEOUT):
                await self.writer.wait_closed()


async def expect_refused_in_tls(address: Address, ctx: ssl.SSLContext, *, then: bytes = b"") -> bytes:
    """Dial with `ctx` and expect the listener to refuse: during the TLS handshake, or (TLS 1.3 checks the client's
    certificate after the client finished) right after it, while `then` is already on its way. Returns the bytes
    that arrived before the connection ended."""
    try:
        peer = await RawPeer.connect(address, ctx)
    except (OSError, asyncio.IncompleteReadError):
        return b""
    peer.send(then)
    return await peer.expect_closed()


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture
async def victim(tmp_path: Path) -> AsyncIterator[Victim]:
    """Three parties and client 0 over tcp-tls on 127.0.0.1; client 1 is allowlisted but not connected."""
    async with start_victim(tmp_path, "tcp-tls") as v:
        yield v
