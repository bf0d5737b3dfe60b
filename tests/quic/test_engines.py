"""The two QUIC engines side by side: they interoperate (a network may mix them), and what the transport adds to qh3
(its Retry tokens, the quieting of its log) does what it says. Real UDP on 127.0.0.1; every wait bounded."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from stoffelnet_core.testing.hostile import TIMEOUT
from stoffelnet_quic.engines import _RetryTokens, load_engine
from stoffelnet_quic.transport import QuicPipe

from .conftest import pipe_pair

ADDRESS = ("127.0.0.1", 40_000)


class Collect:
    """A pipe receiver that keeps what arrives."""

    def __init__(self) -> None:
        self.streams: dict[int, bytearray] = {}
        self.size = 0
        self.changed = asyncio.Event()

    def data_received(self, data: bytes | memoryview) -> None:
        raise AssertionError("a QuicPipe delivers per native stream")

    def stream_data_received(self, index: int, data: bytes | memoryview) -> None:
        self.streams.setdefault(index, bytearray()).extend(data)
        self.size += len(data)
        self.changed.set()

    def eof_received(self) -> None:
        self.changed.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.changed.set()

    def pause_writing(self) -> None:
        """Nothing written here after the first write: nothing to pause."""

    def resume_writing(self) -> None:
        """See `pause_writing`."""

    async def wait_for(self, size: int) -> dict[int, bytes]:
        async with asyncio.timeout(TIMEOUT):
            while self.size < size:
                self.changed.clear()
                await self.changed.wait()
        return {index: bytes(data) for index, data in self.streams.items()}


async def exchange(dialed: QuicPipe, accepted: QuicPipe, size: int) -> None:
    """`size` bytes each way on two native streams (the dialer first); each stream arrives whole and in order."""
    got_dialed, got_accepted = Collect(), Collect()
    dialed.set_receiver(got_dialed)
    accepted.set_receiver(got_accepted)
    forth, back = bytes(range(256)) * (size // 256), bytes(reversed(range(256))) * (size // 256)
    half = size // 2
    dialed.write_streams([(0, [forth[:half]]), (1, [forth[half:]])])
    assert await got_accepted.wait_for(1)
    accepted.write_streams([(0, [back[:half]]), (1, [back[half:]])])
    assert await got_accepted.wait_for(len(forth)) == {0: forth[:half], 1: forth[half:]}
    assert await got_dialed.wait_for(len(back)) == {0: back[:half], 1: back[half:]}


@pytest.mark.parametrize(("dialer", "acceptor"), [("aioquic", "qh3"), ("qh3", "aioquic")])
async def test_the_engines_interoperate(dialer: str, acceptor: str) -> None:
    """An aioquic party and a qh3 party connect either way round; the dialer pins the acceptor's proven certificate
    read through its own engine, and bytes flow both ways (past either side's congestion window)."""
    async with pipe_pair(dialer, acceptor) as (dialed, accepted):
        assert dialed.info.peer_certificate is not None
        assert accepted.info.peer_certificate is None  # the dialer proves itself in core's handshake
        await exchange(dialed, accepted, 512 * 1024)


@pytest.mark.xfail(
    strict=True,
    reason="qh3 2.1.0 as acceptor, without address validation, cannot answer an aioquic dialer's Initial within the "
    "anti-amplification limit ('packet builder capacity exhausted'), so that handshake waits for a retransmission "
    "(~0.7 s). The default (address_validation = true: a Retry first) is not affected.",
)
async def test_a_qh3_acceptor_without_address_validation_answers_an_aioquic_dialer_at_once() -> None:
    started = time.monotonic()
    async with pipe_pair("aioquic", "qh3", address_validation=False):
        assert time.monotonic() - started < 0.3


@pytest.mark.parametrize("validation", [True, False])
async def test_a_qh3_listener_uses_our_retry_tokens(validation: bool) -> None:
    """qh3's own tokens are RSA-2048 (a fresh key per listener, ~0.1-0.3 s, and an RSA decryption per token
    presented): the transport installs its AES-GCM ones in qh3's private ``QuicServer._retry`` (pinned here)."""
    async with pipe_pair("qh3", "qh3", address_validation=validation) as (_, accepted):
        endpoint = accepted._protocol.endpoint
        assert endpoint is not None
        retry = vars(endpoint.server).get("_retry", "qh3 moved QuicServer._retry")
        assert isinstance(retry, _RetryTokens) if validation else retry is None


def test_retry_tokens_are_bound_to_the_address_and_expire() -> None:
    tokens = _RetryTokens()
    token = tokens.create_token(ADDRESS, b"original", b"retry-cid")
    assert tokens.validate_token(ADDRESS, token) == (b"original", b"retry-cid")
    with pytest.raises(ValueError, match="invalid Retry token"):
        tokens.validate_token(("127.0.0.1", 40_001), token)  # another port
    with pytest.raises(ValueError, match="invalid Retry token"):
        tokens.validate_token(ADDRESS, token[:-1] + bytes([token[-1] ^ 1]))  # tampered
    with pytest.raises(ValueError, match="invalid Retry token"):
        tokens.validate_token(ADDRESS, b"short")
    with pytest.raises(ValueError, match="invalid Retry token"):
        _RetryTokens().validate_token(ADDRESS, token)  # another listener's key
    tokens.LIFETIME = -1.0  # every token is now older than its lifetime
    with pytest.raises(ValueError, match="expired Retry token"):
        tokens.validate_token(ADDRESS, token)


def test_qh3_s_warning_on_every_clean_close_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """qh3 logs each peer close at WARNING, a normal end too: those are dropped unless ``quic`` logs DEBUG; a close
    with an error still shows."""
    load_engine("qh3")
    quic = logging.getLogger("quic")
    with caplog.at_level(logging.WARNING, logger="quic"):
        quic.warning("Native peer close: %r", ("peer_closed", True, 0, None, b"done"))
        quic.warning("Native peer close: %r", ("peer_closed", True, 1, None, b"aborted"))
    assert [r.getMessage() for r in caplog.records] == ["Native peer close: ('peer_closed', True, 1, None, b'aborted')"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="quic"):
        quic.warning("Native peer close: %r", ("peer_closed", True, 0, None, b"done"))
    assert len(caplog.records) == 1
