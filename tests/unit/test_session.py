"""The session state machine: a dialer and an acceptor wired by hand, the test carrying the frames."""

from __future__ import annotations

import pytest

from stoffelnet_core import codec, errors, identity, session
from stoffelnet_core.frames import PROTOCOL_VERSION, Ack, Close, Data, Handshake, Ping
from stoffelnet_core.ids import ClientType
from stoffelnet_core.session import (
    CONTROL_CHANNEL,
    CloseReceived,
    CreditReturned,
    HandshakeCompleted,
    MessageReceived,
    PeerIdentity,
    Session,
    SessionState,
    channel_for,
)
from stoffelnet_core.transport import LinkInfo

TRUSTED = LinkInfo("test", trusted=True)
PARTIES = 3


def dialer_verify(handshake: Handshake, proven: str | None = None) -> PeerIdentity:
    """Party 0 dialed party 1: exactly party 1 must answer."""
    return identity.verify_peer(handshake, TRUSTED, identity.Expectation(PARTIES, party=1))


def acceptor_verify(handshake: Handshake, proven: str | None = None) -> PeerIdentity:
    """Party 1 accepts parties with a lower id."""
    return identity.verify_peer(handshake, TRUSTED, identity.Expectation(PARTIES, accept_parties_below=1))


def make_dialer(max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE) -> Session:
    return Session(
        role=ClientType.SERVER,
        local_id=0,
        dialer=True,
        verify=dialer_verify,
        session_id=b"S0",
        max_frame_size=max_frame_size,
    )


def make_acceptor(max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE) -> Session:
    return Session(
        role=ClientType.SERVER,
        local_id=1,
        dialer=False,
        verify=acceptor_verify,
        session_id=b"S1",
        max_frame_size=max_frame_size,
    )


def deliver(src: Session, dst: Session) -> list[session.Event]:
    """Carry `src`'s queued control frames to `dst`; return `dst`'s events."""
    events: list[session.Event] = []
    for channel, frame in src.data_to_send():
        events += dst.receive_data(channel, frame)
    return events


def open_pair(max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE) -> tuple[Session, Session]:
    dialer, acceptor = make_dialer(max_frame_size), make_acceptor(max_frame_size)
    dialer.initiate()
    deliver(dialer, acceptor)
    deliver(acceptor, dialer)
    assert dialer.state is acceptor.state is SessionState.OPEN
    return dialer, acceptor


def handshake_frame(role: str = "server", party: int | None = 0, version: int = PROTOCOL_VERSION) -> bytes:
    return codec.encode(Handshake(role, party, version))


def credit_of(events: list[session.Event]) -> int:
    """Credit a driver would grant right away for these events (messages consumed at once)."""
    total = 0
    for event in events:
        if isinstance(event, MessageReceived):
            total += event.credit
        elif isinstance(event, CreditReturned):
            total += event.amount
    return total


def state_of(s: Session) -> SessionState:
    """The state, read through a call so the type checker does not narrow it across transitions."""
    return s.state


# -- handshake -------------------------------------------------------------------------------------------------------
def test_handshake_completes_both_ways() -> None:
    dialer, acceptor = make_dialer(), make_acceptor()
    assert not acceptor.has_outgoing
    dialer.initiate()
    assert dialer.has_outgoing
    [(channel, frame)] = dialer.data_to_send()
    assert channel == CONTROL_CHANNEL
    assert dialer.data_to_send() == []

    events = acceptor.receive_data(channel, frame)
    assert events == [
        HandshakeCompleted(PeerIdentity(ClientType.SERVER, 0, b"S0")),
        CreditReturned(CONTROL_CHANNEL, len(frame)),
    ]
    assert acceptor.state is SessionState.OPEN
    assert acceptor.peer == PeerIdentity(ClientType.SERVER, 0, b"S0")
    [(reply_channel, reply)] = acceptor.data_to_send()  # the acceptor answers only after verifying
    assert reply_channel == CONTROL_CHANNEL
    assert codec.decode_body(reply[codec.HEADER_SIZE :]) == Handshake("server", 1, PROTOCOL_VERSION, b"S1")

    assert state_of(dialer) is SessionState.HANDSHAKING
    events = dialer.receive_data(reply_channel, reply)
    assert events == [
        HandshakeCompleted(PeerIdentity(ClientType.SERVER, 1, b"S1")),
        CreditReturned(CONTROL_CHANNEL, len(reply)),
    ]
    assert state_of(dialer) is SessionState.OPEN
    assert dialer.data_to_send() == []  # the dialer does not answer the answer


def test_handshake_in_chunks() -> None:
    acceptor = make_acceptor()
    frame = handshake_frame()
    events: list[session.Event] = []
    for i in range(len(frame)):
        events += acceptor.receive_data(CONTROL_CHANNEL, frame[i : i + 1])
    assert [e for e in events if isinstance(e, HandshakeCompleted)] == [
        HandshakeCompleted(PeerIdentity(ClientType.SERVER, 0))
    ]
    assert credit_of(events) == len(frame)


def test_simple_verify_lambdas() -> None:
    seen: list[Handshake] = []

    def verify(handshake: Handshake, proven: str | None = None) -> PeerIdentity:
        seen.append(handshake)
        return PeerIdentity(ClientType.CLIENT, 42, fingerprint="sha256:00")

    acceptor = Session(role=ClientType.SERVER, local_id=2, dialer=False, verify=verify)
    client = Session(
        role=ClientType.CLIENT,
        local_id=None,
        dialer=True,
        verify=lambda hs, _proven: PeerIdentity(ClientType.SERVER, 2),
        nonce=b"n",
    )
    client.initiate()
    assert deliver(client, acceptor)[0] == HandshakeCompleted(
        PeerIdentity(ClientType.CLIENT, 42, fingerprint="sha256:00")
    )
    assert seen == [Handshake("client", None, PROTOCOL_VERSION, b"", b"n")]
    assert deliver(acceptor, client)[0] == HandshakeCompleted(PeerIdentity(ClientType.SERVER, 2))


def test_only_a_handshaking_dialer_initiates() -> None:
    with pytest.raises(errors.InvalidState):
        make_acceptor().initiate()
    dialer, _ = open_pair()
    with pytest.raises(errors.InvalidState):
        dialer.initiate()


def test_data_before_handshake() -> None:
    dialer, _ = open_pair()
    frame = dialer.send_data(0, b"early")
    fresh = make_acceptor()
    with pytest.raises(errors.FramingError, match="before the handshake"):
        fresh.receive_data(channel_for(0), frame)
    assert fresh.state is SessionState.FAILED


@pytest.mark.parametrize("envelope", [Close("bye"), Ack(0, 0)])
def test_other_control_envelopes_before_handshake(envelope: Close | Ack) -> None:
    with pytest.raises(errors.FramingError, match="before the handshake"):
        make_acceptor().receive_data(CONTROL_CHANNEL, codec.encode(envelope))


def test_second_handshake() -> None:
    dialer, acceptor = open_pair()
    with pytest.raises(errors.FramingError, match="second Handshake"):
        acceptor.receive_data(CONTROL_CHANNEL, handshake_frame())
    assert acceptor.state is SessionState.FAILED
    with pytest.raises(errors.FramingError, match="second Handshake"):
        dialer.receive_data(CONTROL_CHANNEL, handshake_frame(party=1))


def test_two_handshakes_in_one_chunk() -> None:
    acceptor = make_acceptor()
    with pytest.raises(errors.FramingError, match="second Handshake"):
        acceptor.receive_data(CONTROL_CHANNEL, handshake_frame() * 2)


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 0xFFFFFFFF])
def test_protocol_version_mismatch(version: int) -> None:
    acceptor = make_acceptor()
    with pytest.raises(errors.FramingError, match="protocol version"):
        acceptor.receive_data(CONTROL_CHANNEL, handshake_frame(version=version))
    assert acceptor.state is SessionState.FAILED
    assert acceptor.peer is None
    assert acceptor.data_to_send() == []


@pytest.mark.parametrize(
    ("role", "party"),
    [
        ("server", 2),  # a higher id must not dial us
        ("server", PARTIES),  # out of range
        ("server", None),  # no id
        ("client", 0),  # clients are not accepted here
        ("wizard", 0),  # unknown role
    ],
)
def test_verify_failure_propagates_and_fails_the_session(role: str, party: int | None) -> None:
    acceptor = make_acceptor()
    with pytest.raises(errors.AuthenticationError):
        acceptor.receive_data(CONTROL_CHANNEL, handshake_frame(role, party))
    assert acceptor.state is SessionState.FAILED
    assert acceptor.peer is None
    assert acceptor.data_to_send() == []  # no reply to a peer that failed verification
    with pytest.raises(errors.InvalidState):
        acceptor.receive_data(CONTROL_CHANNEL, handshake_frame())


def test_dialer_reaching_the_wrong_party() -> None:
    dialer = make_dialer()
    dialer.initiate()
    with pytest.raises(errors.AuthenticationError, match="dialed party 1"):
        dialer.receive_data(CONTROL_CHANNEL, handshake_frame(party=2))
    assert dialer.state is SessionState.FAILED


def test_an_acceptor_speaking_first_is_refused() -> None:
    """The module's first rule: the dialer speaks first. A Handshake reaching a dialer that sent none breaks it."""
    dialer = make_dialer()
    with pytest.raises(errors.FramingError):
        dialer.receive_data(CONTROL_CHANNEL, handshake_frame(party=1))


def test_untrusted_link_is_refused() -> None:
    acceptor = Session(
        role=ClientType.SERVER,
        local_id=1,
        dialer=False,
        verify=lambda hs, _proven: identity.verify_peer(
            hs, LinkInfo("tcp"), identity.Expectation(PARTIES, accept_parties_below=1)
        ),
    )
    with pytest.raises(errors.AuthenticationError, match="presented no certificate"):
        acceptor.receive_data(CONTROL_CHANNEL, handshake_frame())
    assert acceptor.state is SessionState.FAILED


# -- data ------------------------------------------------------------------------------------------------------------
def test_messages_arrive_with_sequence_numbers_and_tags() -> None:
    dialer, acceptor = open_pair()
    frames = [
        dialer.send_data(0, b"a"),
        dialer.send_data(0, b"b", tag=7),
        dialer.send_data(3, memoryview(b"c"), tag=b"round-1"),
    ]
    assert acceptor.receive_data(channel_for(0), frames[0] + frames[1]) == [
        MessageReceived(0, 0, None, b"a", len(frames[0])),
        MessageReceived(0, 1, 7, b"b", len(frames[1])),
    ]
    assert acceptor.receive_data(channel_for(3), frames[2]) == [MessageReceived(3, 0, b"round-1", b"c", len(frames[2]))]
    reply = acceptor.send_data(0, b"back")
    assert dialer.receive_data(channel_for(0), reply) == [MessageReceived(0, 0, None, b"back", len(reply))]


def test_data_on_the_wrong_channel() -> None:
    dialer, acceptor = open_pair()
    frame = dialer.send_data(2, b"x")
    with pytest.raises(errors.FramingError, match="arrived on channel 2"):
        acceptor.receive_data(2, frame)
    assert acceptor.state is SessionState.FAILED


def test_data_on_the_control_channel() -> None:
    dialer, acceptor = open_pair()
    with pytest.raises(errors.FramingError):
        acceptor.receive_data(CONTROL_CHANNEL, dialer.send_data(0, b"x"))


@pytest.mark.parametrize("seq", [1, 5, 2**64 - 1])
def test_sequence_gap(seq: int) -> None:
    _, acceptor = open_pair()
    with pytest.raises(errors.FramingError, match="expected sequence number 0"):
        acceptor.receive_data(channel_for(0), codec.encode(Data(0, seq, None, b"x")))
    assert acceptor.state is SessionState.FAILED


def test_sequence_replay() -> None:
    _, acceptor = open_pair()
    frame = codec.encode(Data(0, 0, None, b"x"))
    acceptor.receive_data(channel_for(0), frame)
    with pytest.raises(errors.FramingError, match="expected sequence number 1"):
        acceptor.receive_data(channel_for(0), frame)


def test_sequence_numbers_are_per_stream() -> None:
    _, acceptor = open_pair()
    for stream, seq in [(0, 0), (1, 0), (1, 1), (1, 2), (0, 1), (2, 0)]:
        [event] = acceptor.receive_data(channel_for(stream), codec.encode(Data(stream, seq, None, b"")))
        assert isinstance(event, MessageReceived)
        assert (event.stream, event.seq) == (stream, seq)


@pytest.mark.parametrize("envelope", [Handshake("server", 0), Ack(0, 0), Close("x")])
def test_control_envelope_on_a_data_channel(envelope: Handshake | Ack | Close) -> None:
    _, acceptor = open_pair()
    with pytest.raises(errors.FramingError, match="on data channel 1"):
        acceptor.receive_data(channel_for(0), codec.encode(envelope))
    assert acceptor.state is SessionState.FAILED


def test_control_envelope_on_a_data_channel_before_the_handshake() -> None:
    with pytest.raises(errors.FramingError, match="on data channel"):
        make_acceptor().receive_data(5, handshake_frame())


def test_ack_is_accepted_once_open() -> None:
    _, acceptor = open_pair()
    for n in range(4):
        acceptor.send_data(0, bytes([n]))
    frame = codec.encode(Ack(0, 3))
    events = acceptor.receive_data(CONTROL_CHANNEL, frame)
    assert events[-1] == CreditReturned(CONTROL_CHANNEL, len(frame))
    assert isinstance(events[0], session.Acknowledged)
    assert acceptor.ledger is not None
    assert acceptor.ledger.unacked_bytes == 0


def test_ack_for_data_never_sent_is_a_framing_error() -> None:
    _, acceptor = open_pair()
    acceptor.send_data(0, b"one")
    with pytest.raises(errors.FramingError, match="Ack for message 1 on stream 0, but only 1 were ever sent"):
        acceptor.receive_data(CONTROL_CHANNEL, codec.encode(Ack(0, 1)))
    assert acceptor.state is SessionState.FAILED


# -- close -----------------------------------------------------------------------------------------------------------
def test_close_both_ways() -> None:
    dialer, acceptor = open_pair()
    dialer.close("done")
    dialer.close("again")  # idempotent: one Close on the wire
    assert dialer.sent_close
    assert dialer.state is SessionState.OPEN  # half-closed until the peer's Close
    events = deliver(dialer, acceptor)
    assert events[0] == CloseReceived("done")
    assert acceptor.received_close
    assert acceptor.state is SessionState.OPEN
    acceptor.send_data(0, b"still allowed: our side is open")
    acceptor.close()
    assert state_of(acceptor) is SessionState.CLOSED
    deliver(acceptor, dialer)
    assert state_of(dialer) is SessionState.CLOSED


def test_data_after_the_peers_close() -> None:
    dialer, acceptor = open_pair()
    frame = dialer.send_data(0, b"late")
    dialer.close()
    deliver(dialer, acceptor)
    with pytest.raises(errors.FramingError, match="after the peer's Close"):
        acceptor.receive_data(channel_for(0), frame)
    assert acceptor.state is SessionState.FAILED


def test_second_close() -> None:
    _, acceptor = open_pair()
    frame = codec.encode(Close())
    acceptor.receive_data(CONTROL_CHANNEL, frame)
    with pytest.raises(errors.FramingError, match="second Close"):
        acceptor.receive_data(CONTROL_CHANNEL, frame)
    assert acceptor.state is SessionState.FAILED


def test_close_after_failure_queues_nothing() -> None:
    acceptor = make_acceptor()
    acceptor.fail()
    acceptor.close()
    assert acceptor.data_to_send() == []
    assert acceptor.state is SessionState.FAILED


# -- local misuse on send --------------------------------------------------------------------------------------------
def test_send_before_open() -> None:
    dialer = make_dialer()
    dialer.initiate()
    with pytest.raises(errors.InvalidState) as info:
        dialer.send_data(0, b"x")
    assert info.value.state is SessionState.HANDSHAKING


def test_send_after_close() -> None:
    dialer, _ = open_pair()
    dialer.close()
    with pytest.raises(errors.InvalidState):
        dialer.send_data(0, b"x")


def test_send_after_failure() -> None:
    dialer, _ = open_pair()
    dialer.fail()
    with pytest.raises(errors.InvalidState):
        dialer.send_data(0, b"x")
    with pytest.raises(errors.InvalidState):
        dialer.receive_data(channel_for(0), b"")


def test_oversize_payload() -> None:
    dialer, acceptor = open_pair(max_frame_size=1000)
    frame = dialer.send_data(0, bytes(dialer.max_payload()), tag=-(2**64))  # the largest always fits
    assert acceptor.receive_data(channel_for(0), frame)[0] == MessageReceived(
        0, 0, -(2**64), bytes(dialer.max_payload()), len(frame)
    )
    with pytest.raises(errors.SendError, match="maximum frame size"):
        dialer.send_data(0, bytes(1000))
    # a refused message takes no sequence number
    [event] = acceptor.receive_data(channel_for(0), dialer.send_data(0, b"next"))
    assert isinstance(event, MessageReceived)
    assert event.seq == 1


@pytest.mark.parametrize("tag", [2**64, -(2**64) - 1, 2**200])
def test_bignum_tag(tag: int) -> None:
    dialer, _ = open_pair()
    with pytest.raises(errors.SendError, match="tag"):
        dialer.send_data(0, b"x", tag=tag)


def test_receiver_refuses_oversize_frames_at_the_header() -> None:
    _, acceptor = open_pair(max_frame_size=100)
    with pytest.raises(errors.FramingError, match="exceeds the maximum frame size"):
        acceptor.receive_data(channel_for(0), (101).to_bytes(4, "big"))


def test_eof_inside_a_frame() -> None:
    dialer, acceptor = open_pair()
    frame = dialer.send_data(0, b"truncated")
    acceptor.receive_data(channel_for(0), frame[:-1])
    with pytest.raises(errors.FramingError, match="ended inside a frame"):
        acceptor.eof()


def test_eof_between_frames() -> None:
    dialer, acceptor = open_pair()
    acceptor.receive_data(channel_for(0), dialer.send_data(0, b"whole"))
    acceptor.eof()


# -- flow-control credit ---------------------------------------------------------------------------------------------
def conversation(dialer: Session) -> list[tuple[int, bytes]]:
    """A dialer's frames after the handshake: messages on several streams, a Ping, then Close."""
    frames = [(channel_for(s), dialer.send_data(s, bytes([s]) * n)) for s, n in [(0, 10), (1, 3000), (0, 0), (4, 70)]]
    frames.append((channel_for(1), dialer.send_data(1, b"t", tag=b"tag")))
    frames.append((CONTROL_CHANNEL, codec.encode(Ping())))  # Acks: tests/unit/test_resume.py
    dialer.close("end")
    frames += dialer.data_to_send()
    return frames


@pytest.mark.parametrize("chunk", [1, 3, 7, 100, 10_000])
@pytest.mark.parametrize("hold", [False, True])
def test_credit_accounting_adds_up_for_any_chunking(chunk: int, hold: bool) -> None:
    """Credit in MessageReceived + CreditReturned + `consumed` == bytes fed, per channel."""
    dialer, acceptor = open_pair()
    fed: dict[int, int] = {}
    returned: dict[int, int] = {}
    held: list[MessageReceived] = []
    received: list[bytes] = []
    for channel, frame in conversation(dialer):
        for i in range(0, len(frame), chunk):
            piece = frame[i : i + chunk]
            fed[channel] = fed.get(channel, 0) + len(piece)
            for event in acceptor.receive_data(channel, piece):
                if isinstance(event, CreditReturned):
                    returned[event.channel] = returned.get(event.channel, 0) + event.amount
                elif isinstance(event, MessageReceived):
                    received.append(event.payload)
                    if hold:
                        held.append(event)
                    else:
                        ch = channel_for(event.stream)
                        returned[ch] = returned.get(ch, 0) + acceptor.consumed(ch, event.credit)
    for event in held:
        ch = channel_for(event.stream)
        returned[ch] = returned.get(ch, 0) + acceptor.consumed(ch, event.credit)
    assert received == [bytes(10), b"\x01" * 3000, b"", b"\x04" * 70, b"t"]
    assert returned == fed
    assert acceptor.received_close


def test_no_credit_for_partial_frames_while_a_message_is_held() -> None:
    dialer, acceptor = open_pair()
    channel = channel_for(0)
    first, second = dialer.send_data(0, b"first"), dialer.send_data(0, bytes(500))
    [message] = acceptor.receive_data(channel, first + second[:100])
    assert isinstance(message, MessageReceived)
    assert message.credit == len(first)
    assert acceptor.receive_data(channel, second[100:200]) == []  # held: no credit for the partial frame
    # consuming the held message returns its credit plus the partial bytes buffered meanwhile
    assert acceptor.consumed(channel, message.credit) == len(first) + 200
    # nothing held now: partial bytes are returned as they come
    assert acceptor.receive_data(channel, second[200:300]) == [CreditReturned(channel, 100)]
    [rest] = acceptor.receive_data(channel, second[300:])
    assert rest == MessageReceived(0, 1, None, bytes(500), len(second) - 300)
    assert acceptor.consumed(channel, rest.credit) == len(second) - 300


def test_a_frame_bigger_than_the_window_completes_when_nothing_is_held() -> None:
    """A sender limited to `window` bytes of credit still delivers a frame several windows long."""
    window = 256
    dialer, acceptor = open_pair()
    frame = dialer.send_data(0, bytes(10 * window))
    channel = channel_for(0)
    credit, sent, events = window, 0, []
    while sent < len(frame) and credit:
        n = min(credit, len(frame) - sent)
        credit -= n
        out = acceptor.receive_data(channel, frame[sent : sent + n])
        sent += n
        for event in out:
            if isinstance(event, CreditReturned):
                credit += event.amount
            elif isinstance(event, MessageReceived):
                events.append(event)
                credit += acceptor.consumed(channel, event.credit)
    assert sent == len(frame)
    assert [e.payload for e in events] == [bytes(10 * window)]
    assert credit == window  # every byte came back


def test_a_held_message_stalls_a_window_limited_sender() -> None:
    """The counterpart: while a message is held, the next big frame cannot complete (the reader is bounded)."""
    window = 256
    dialer, acceptor = open_pair()
    channel = channel_for(0)
    small, big = dialer.send_data(0, b"held"), dialer.send_data(0, bytes(10 * window))
    [held] = acceptor.receive_data(channel, small)
    assert isinstance(held, MessageReceived)
    credit, sent = window, 0
    while credit:
        n = min(credit, len(big) - sent)
        credit -= n
        for event in acceptor.receive_data(channel, big[sent : sent + n]):
            assert not isinstance(event, CreditReturned | MessageReceived)
        sent += n
    assert sent == window < len(big)  # stalled after exactly one window
    credit += acceptor.consumed(channel, held.credit)
    assert credit == len(small) + window


def test_consumed_on_an_unknown_channel_returns_the_credit() -> None:
    _, acceptor = open_pair()
    assert acceptor.consumed(99, 17) == 17


def test_alpn_role_must_match_the_claimed_role() -> None:
    from stoffelnet_core.transport import ALPN_CLIENT

    link = LinkInfo("tcp-tls", alpn=ALPN_CLIENT, trusted=True)  # trusted: only the ALPN check can refuse
    claim = Handshake("server", 0, PROTOCOL_VERSION, b"s", b"n")
    with pytest.raises(errors.AuthenticationError, match="negotiated 'stoffelnet/1-client' in TLS but claims"):
        identity.verify_peer(claim, link, identity.Expectation(PARTIES, accept_parties_below=1))


# -- channels on independent native streams (QUIC) -------------------------------------------------------------------
def make_unordered(dialer: bool) -> Session:
    return Session(
        role=ClientType.SERVER,
        local_id=0 if dialer else 1,
        dialer=dialer,
        verify=dialer_verify if dialer else acceptor_verify,
        session_id=b"S0" if dialer else b"S1",
        unordered=True,
    )


def test_over_native_streams_the_dialer_holds_data_that_overtook_the_acceptors_handshake() -> None:
    """The acceptor's first message may arrive before its Handshake (another QUIC stream): the dialer keeps it
    unread, returns no credit for it, and delivers it right after the acceptor is proven."""
    dialer, acceptor = make_unordered(True), make_unordered(False)
    dialer.initiate()
    deliver(dialer, acceptor)
    [(control, reply)] = acceptor.data_to_send()
    early = acceptor.send_data(3, b"first")
    assert dialer.receive_data(channel_for(3), memoryview(early)) == []  # held: nothing delivered, nothing returned
    events = dialer.receive_data(control, reply)
    assert events[0] == HandshakeCompleted(PeerIdentity(ClientType.SERVER, 1, b"S1"))
    [message] = [e for e in events if isinstance(e, MessageReceived)]
    assert (message.stream, message.seq, message.payload) == (3, 0, b"first")
    assert credit_of(events) == len(reply) + len(early)


def test_over_native_streams_an_acceptor_still_refuses_data_before_the_handshake() -> None:
    """Only the acceptor's data can legitimately overtake (the dialer sends only once accepted): an unproven dialer
    gets nothing held."""
    acceptor = make_unordered(False)
    with pytest.raises(errors.FramingError, match="before the handshake"):
        acceptor.receive_data(channel_for(0), codec.encode(Data(0, 0, None, b"early")))


def test_over_native_streams_data_may_arrive_after_the_peers_close() -> None:
    """The peer's Close orders only its control channel: its last messages may come after it, and are delivered."""
    dialer, acceptor = make_unordered(True), make_unordered(False)
    dialer.initiate()
    deliver(dialer, acceptor)
    deliver(acceptor, dialer)
    frame = dialer.send_data(0, b"late")
    dialer.close()
    deliver(dialer, acceptor)
    acceptor.close()
    deliver(acceptor, dialer)
    assert acceptor.state is SessionState.CLOSED
    [message] = [e for e in acceptor.receive_data(channel_for(0), frame) if isinstance(e, MessageReceived)]
    assert message.payload == b"late"
