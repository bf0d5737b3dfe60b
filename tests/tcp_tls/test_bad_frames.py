"""Protocol faults from an AUTHENTICATED peer over real TLS: each closes that one connection, nothing else.

DESIGN.md "Wire format": an oversized frame is refused before allocating; unknown kinds and malformed CBOR are
`FramingError`; the connection that carried the fault is closed and other connections are unaffected. The attacker
is an allowlisted client (its key is pinned, so TLS and the Handshake check pass) that writes core's mux and codec
by hand. After each fault: the attacker sees the connection end within seconds, the party logged a FramingError
(logger ``stoffelnet.peer``), nothing was delivered, and the party, its peers and the legitimate client go on.
"""

from __future__ import annotations

from collections.abc import Callable

import cbor2
import pytest

from stoffelnet_core import codec, errors
from stoffelnet_core.frames import PROTOCOL_VERSION, Ack, Close, Handshake
from stoffelnet_core.mux import DATA, WINDOW_UPDATE
from stoffelnet_core.testing.hostile import (
    SPARE_CLIENT,
    TIMEOUT,
    LogWatch,
    Victim,
    assert_accepts_fresh_client,
    assert_healthy,
    caplog_messages,
    data_frame,
    handshake_frame,
    mux_frame,
)

from .conftest import RawPeer, client_context

PEER_LOG = "stoffelnet.peer"
TARGET = 1  # the attacked party: it dials party 2 and accepts party 0, so both kinds of link must survive


def _frame(body: bytes) -> bytes:
    """A codec frame: 4-byte big-endian length, then `body`."""
    return len(body).to_bytes(4, "big") + body


def _control(envelope: Handshake | Ack | Close) -> bytes:
    return mux_frame(DATA, 0, codec.encode(envelope))


# Each case: what the authenticated attacker sends, and what the party's FramingError must say.
AFTER_HANDSHAKE: dict[str, tuple[Callable[[Victim], bytes], str]] = {
    "frame-length-over-max_frame_size": (
        # only the 4-byte length of an app frame, one byte over the limit: refused before a body is awaited
        lambda v: mux_frame(DATA, 1, (v.base.max_frame_size + 1).to_bytes(4, "big")),
        "exceeds the maximum frame size",
    ),
    "frame-length-2**32-1-on-control-channel": (
        lambda v: mux_frame(DATA, 0, b"\xff\xff\xff\xff"),
        "exceeds the maximum frame size",
    ),
    "garbage-cbor": (
        lambda v: mux_frame(DATA, 1, _frame(b"\xff\xfe\xfd\xfc")),
        "malformed CBOR",
    ),
    "cbor-that-is-not-an-envelope": (
        lambda v: mux_frame(DATA, 1, _frame(cbor2.dumps({"kind": 1}))),
        "an envelope must be a non-empty CBOR array, got dict",
    ),
    "unknown-envelope-kind-on-control-channel": (
        lambda v: mux_frame(DATA, 0, _frame(cbor2.dumps([99, b"from the future"]))),
        "unknown envelope kind 99",
    ),
    "unknown-envelope-kind-on-data-channel": (
        lambda v: mux_frame(DATA, 1, _frame(cbor2.dumps([42, 0, 0, None, b"x"]))),
        "unknown envelope kind 42",
    ),
    "mux-data-beyond-the-window": (
        # the header alone announces more than the whole receive window: refused before the bytes arrive
        lambda v: mux_frame(DATA, 1, length=v.base.receive_window_bytes + 1),
        "flow control violated",
    ),
    "unknown-mux-frame-type": (
        lambda v: mux_frame(7, 1, b"\x00" * 8),
        "unknown mux frame type 7",
    ),
    "mux-window-update-of-zero": (
        lambda v: mux_frame(WINDOW_UPDATE, 1, length=0),
        "invalid window update",
    ),
    "mux-window-update-overflow": (
        lambda v: mux_frame(WINDOW_UPDATE, 1, length=0x7FFFFFFF),
        "invalid window update",
    ),
    "data-with-a-skipped-sequence-number": (
        lambda v: data_frame(0, 1, b"gap"),
        "expected sequence number 0, got 1",
    ),
    "data-for-another-stream-on-this-channel": (
        lambda v: mux_frame(DATA, 1, codec.encode_data(5, 0, None, b"misrouted")),
        "Data for stream 5 arrived on channel 1",
    ),
    "a-second-handshake": (
        lambda v: handshake_frame("client", SPARE_CLIENT),
        "a second Handshake",
    ),
    "control-envelope-on-a-data-channel": (
        lambda v: mux_frame(DATA, 1, codec.encode(Close("wrong channel"))),
        "control envelope Close on data channel 1",
    ),
    "ack-for-data-never-sent": (
        lambda v: _control(Ack(0, 5)),
        "Ack for message 5 on stream 0, but only 0 were ever sent on that stream",
    ),
    "data-on-a-stream-id-beyond-32-bits": (
        lambda v: mux_frame(DATA, 1, _frame(cbor2.dumps([1, 2**32, 0, None, b"x"]))),
        "envelope field stream must be an integer in 0..4294967295, got 4294967296",
    ),
    "data-with-a-sequence-number-beyond-64-bits": (
        lambda v: mux_frame(DATA, 1, _frame(cbor2.dumps([1, 0, 2**64, None, b"x"]))),
        "envelope field seq must be an integer in 0..18446744073709551615",
    ),
    "data-after-close": (
        lambda v: _control(Close("bye")) + data_frame(0, 0, b"after close"),
        "data frame after the peer's Close",
    ),
}


@pytest.mark.parametrize("case", list(AFTER_HANDSHAKE), ids=list(AFTER_HANDSHAKE))
async def test_fault_after_the_handshake_closes_only_that_connection(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    build, reason = AFTER_HANDSHAKE[case]
    attacker = await RawPeer.authenticated_client(victim, TARGET)
    party = victim.parties[TARGET]
    assert SPARE_CLIENT in party.clients()
    attacker.send(build(victim))
    await attacker.expect_closed()  # bounded by TIMEOUT: the party hung up on it
    record = await logwatch.wait_for(f"closing connection to client {SPARE_CLIENT}: FramingError: ", logger=PEER_LOG)
    assert reason in record.getMessage()
    assert any("FramingError" in m and reason in m for m in caplog_messages(caplog, PEER_LOG))
    # The party's application sees the connection's own error, and only for that client.
    with pytest.raises(errors.FramingError):
        await party.receive_from_client(SPARE_CLIENT, timeout=TIMEOUT)
    assert party.clients() == [0]
    await assert_healthy(victim)
    await assert_accepts_fresh_client(victim)


BEFORE_HANDSHAKE: dict[str, tuple[bytes, str]] = {
    "data-before-the-handshake": (data_frame(0, 0), "data frame before the handshake completed"),
    "ack-before-the-handshake": (_control(Ack(0, 0)), "Ack before the handshake completed"),
    "close-before-the-handshake": (_control(Close("hi")), "Close before the handshake completed"),
    "oversized-first-frame": (mux_frame(DATA, 0, b"\x7f\xff\xff\xff"), "exceeds the maximum frame size"),
    "garbage-first-frame": (mux_frame(DATA, 0, _frame(b"\x1c")), "malformed CBOR"),
    "unknown-mux-type-first": (mux_frame(0xFF, 0, b""), "unknown mux frame type 255"),
    "handshake-of-another-protocol-version": (
        mux_frame(DATA, 0, codec.encode(Handshake("client", SPARE_CLIENT, PROTOCOL_VERSION + 1, b"s" * 16, b"n" * 16))),
        f"peer speaks protocol version {PROTOCOL_VERSION + 1}",
    ),
}


@pytest.mark.parametrize("case", list(BEFORE_HANDSHAKE), ids=list(BEFORE_HANDSHAKE))
async def test_fault_before_the_handshake_closes_only_that_connection(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """A pinned client that skips its Handshake (or opens with a broken frame) is cut off before anything else."""
    payload, reason = BEFORE_HANDSHAKE[case]
    tls = victim.client_tls(SPARE_CLIENT)
    attacker = await RawPeer.connect(victim.address(TARGET), client_context(tls.cert, tls.key, victim.party_certs))
    attacker.send(payload + data_frame(0, 0))
    got = await attacker.expect_closed()
    assert got == b"", "the party answered a peer that never authenticated"
    record = await logwatch.wait_for("FramingError: ", reason, logger=PEER_LOG)
    assert record.getMessage().startswith("closing connection to 127.0.0.1:")  # not identified: no client id
    assert any("FramingError" in m and reason in m for m in caplog_messages(caplog, PEER_LOG))
    assert victim.parties[TARGET].clients() == [0]
    await assert_healthy(victim)
    await assert_accepts_fresh_client(victim)


async def test_truncated_frame_then_eof(victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture) -> None:
    """Half a Data frame, then the attacker hangs up: a FramingError, reported to the application as the loss of
    that one client (ConnectionLost caused by FramingError), and the half message is never delivered."""
    attacker = await RawPeer.authenticated_client(victim, TARGET)
    frame = codec.encode_data(0, 0, None, b"x" * 100)
    attacker.send(mux_frame(DATA, 1, frame[:50]))
    await attacker.close()  # TLS close_notify, then TCP FIN: a clean end of stream in the middle of a frame
    party = victim.parties[TARGET]
    with pytest.raises(errors.ConnectionLost) as lost:
        await party.receive_from_client(SPARE_CLIENT, timeout=TIMEOUT)
    assert isinstance(lost.value.__cause__, errors.FramingError)
    assert "ended inside a frame" in str(lost.value.__cause__)
    record = await logwatch.wait_for(f"connection to client {SPARE_CLIENT} ended inside a frame", logger=PEER_LOG)
    assert "(50 bytes of it received)" in record.getMessage()
    assert any("ended inside a frame" in m for m in caplog_messages(caplog, PEER_LOG))
    assert party.clients() == [0]
    await assert_healthy(victim)
    await assert_accepts_fresh_client(victim)


async def test_replayed_message_is_refused_and_the_original_delivered_once(
    victim: Victim, logwatch: LogWatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid message is delivered; the same frame sent again (a replay) is a FramingError, never a second copy."""
    attacker = await RawPeer.authenticated_client(victim, TARGET)
    party = victim.parties[TARGET]
    frame = data_frame(0, 0, b"once")
    attacker.send(frame)
    assert await party.receive_from_client(SPARE_CLIENT, timeout=TIMEOUT) == (SPARE_CLIENT, b"once")
    attacker.send(frame)
    await attacker.expect_closed()
    record = await logwatch.wait_for(f"closing connection to client {SPARE_CLIENT}: FramingError: ", logger=PEER_LOG)
    assert "expected sequence number 1, got 0" in record.getMessage()
    assert any("expected sequence number 1, got 0" in m for m in caplog_messages(caplog, PEER_LOG))
    with pytest.raises(errors.FramingError):
        await party.receive_from_client(SPARE_CLIENT, timeout=TIMEOUT)
    await assert_healthy(victim)  # its inbox checks prove no second copy is waiting anywhere
    await assert_accepts_fresh_client(victim)


async def test_truncated_mux_header_then_eof(victim: Victim, logwatch: LogWatch) -> None:
    """Five of the nine bytes of a mux header, then EOF: like half a codec frame, a FramingError the log names."""
    attacker = await RawPeer.authenticated_client(victim, TARGET)
    attacker.send(data_frame(0, 0)[:5])
    await attacker.close()
    with pytest.raises(errors.ConnectionLost) as lost:
        await victim.parties[TARGET].receive_from_client(SPARE_CLIENT, timeout=TIMEOUT)
    assert victim.parties[TARGET].clients() == [0]
    await assert_healthy(victim)
    assert isinstance(lost.value.__cause__, errors.FramingError)  # got: None
    assert logwatch.matching(f"connection to client {SPARE_CLIENT} ended inside a frame", logger=PEER_LOG)
