"""Properties of the session: any bad input raises only our remote errors; credit always adds up."""

from __future__ import annotations

import itertools
from collections import defaultdict

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stoffelnet_core import codec, errors, identity, session
from stoffelnet_core.frames import PROTOCOL_VERSION, Ack, Close, Data, Envelope, Handshake, Ping
from stoffelnet_core.ids import ClientType
from stoffelnet_core.session import (
    CONTROL_CHANNEL,
    CloseReceived,
    CreditReturned,
    HandshakeCompleted,
    MessageReceived,
    Session,
    SessionState,
    channel_for,
)
from stoffelnet_core.transport import LinkInfo

# No explain phase: on a failure it imports libcst, whose DeprecationWarning `filterwarnings = error` turns into an
# INTERNALERROR that hides the falsifying example.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
SETTINGS = settings(max_examples=100, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow])

TRUSTED = LinkInfo("test", trusted=True)
REMOTE_ERRORS = (errors.FramingError, errors.AuthenticationError)
MAX_FRAME = 4096


def make_acceptor() -> Session:
    expect = identity.Expectation(3, client_count=2, accept_clients=True, accept_parties_below=1)
    return Session(
        role=ClientType.SERVER,
        local_id=1,
        dialer=False,
        verify=lambda hs, _proven: identity.verify_peer(hs, TRUSTED, expect),
        max_frame_size=MAX_FRAME,
    )


def make_dialer() -> Session:
    return Session(
        role=ClientType.SERVER,
        local_id=0,
        dialer=True,
        verify=lambda hs, _proven: identity.verify_peer(hs, TRUSTED, identity.Expectation(3, party=1)),
        max_frame_size=MAX_FRAME,
    )


def open_acceptor() -> Session:
    acceptor = make_acceptor()
    acceptor.receive_data(CONTROL_CHANNEL, codec.encode(Handshake("server", 0)))
    acceptor.data_to_send()
    assert acceptor.state is SessionState.OPEN
    return acceptor


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_expecting_only_remote_errors(target: Session, inputs: list[tuple[int, bytes]]) -> None:
    """Feed `(channel, bytes)` pairs until the first error; only FramingError/AuthenticationError may be raised.

    States only move forward (handshaking, open, closed; failed after an error), and a failed session refuses
    more input as local misuse (`InvalidState`).
    """
    order = {SessionState.HANDSHAKING: 0, SessionState.OPEN: 1, SessionState.CLOSED: 2}
    before = target.state
    for channel, data in inputs:
        try:
            events = target.receive_data(channel, data)
        except REMOTE_ERRORS:
            assert target.state is SessionState.FAILED
            try:
                target.receive_data(channel, data)
            except errors.InvalidState:
                return
            raise AssertionError("a failed session accepted more input") from None
        for event in events:
            assert isinstance(event, HandshakeCompleted | MessageReceived | CloseReceived | CreditReturned)
            if isinstance(event, MessageReceived):
                assert channel == channel_for(event.stream)
                assert event.credit > 0
            elif isinstance(event, CreditReturned):
                assert event.channel == channel
                assert event.amount > 0
        assert target.state is not SessionState.FAILED
        assert order[target.state] >= order[before]
        before = target.state


channels = st.integers(0, 4) | st.integers(0, 2**32)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
tags = st.none() | st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.binary(max_size=10)
small_stream = st.integers(0, 3)
envelopes: st.SearchStrategy[Envelope] = st.one_of(
    st.builds(
        Handshake,
        role=st.sampled_from(["server", "client", "nobody"]),
        id=st.none() | st.integers(0, 4) | u32,
        version=st.just(PROTOCOL_VERSION) | u32,
        session_id=st.binary(max_size=8),
        nonce=st.binary(max_size=8),
    ),
    st.builds(Data, stream=small_stream | u32, seq=st.integers(0, 3) | u64, tag=tags, payload=st.binary(max_size=64)),
    st.builds(Ack, stream=small_stream | u32, seq=u64),
    st.builds(Close, reason=st.text(max_size=10)),
)


@st.composite
def envelope_inputs(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """Well-formed envelopes, mostly on the channel they belong on, so the semantic checks are reached."""
    out: list[tuple[int, bytes]] = []
    for envelope in draw(st.lists(envelopes, max_size=10)):
        natural = channel_for(envelope.stream) if isinstance(envelope, Data) else CONTROL_CHANNEL
        channel = draw(st.just(natural) | channels)
        out.append((channel, codec.encode(envelope)))
    return out


@SETTINGS
@given(st.booleans(), st.lists(st.tuples(channels, st.binary(max_size=64)), max_size=10))
def test_random_bytes_on_random_channels(opened: bool, inputs: list[tuple[int, bytes]]) -> None:
    feed_expecting_only_remote_errors(open_acceptor() if opened else make_acceptor(), inputs)


@SETTINGS
@given(st.booleans(), envelope_inputs())
def test_random_envelopes_on_random_channels(opened: bool, inputs: list[tuple[int, bytes]]) -> None:
    feed_expecting_only_remote_errors(open_acceptor() if opened else make_acceptor(), inputs)


def conversation() -> list[tuple[int, bytes]]:
    """A valid dialer-side stream of frames: handshake, messages on several streams, a Ping, a Close."""
    dialer, acceptor = make_dialer(), make_acceptor()
    dialer.initiate()
    frames = dialer.data_to_send()
    for channel, frame in frames:
        acceptor.receive_data(channel, frame)
    for channel, frame in acceptor.data_to_send():
        dialer.receive_data(channel, frame)
    assert dialer.state is SessionState.OPEN
    for stream, payload, tag in [(0, b"a", None), (1, b"b" * 300, 5), (0, b"", b"t"), (2, b"c" * 20, None)]:
        frames.append((channel_for(stream), dialer.send_data(stream, payload, tag)))
    frames.append((CONTROL_CHANNEL, codec.encode(Ping())))  # Acks: tests/unit/test_resume.py
    dialer.close()
    frames += dialer.data_to_send()
    return frames


CONVERSATION = conversation()
edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "set", "channel", "drop", "duplicate", "swap"]),
        st.integers(min_value=0),
        st.integers(min_value=0),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=5,
)


def mutate(frames: list[tuple[int, bytes]], changes: list[tuple[str, int, int, int]]) -> list[tuple[int, bytes]]:
    out = list(frames)
    for kind, which, position, value in changes:
        if not out:
            break
        i = which % len(out)
        channel, frame = out[i]
        buf = bytearray(frame)
        j = position % (len(buf) + 1)
        if kind == "insert":
            buf.insert(j, value)
        elif kind == "channel":
            channel = value % 6
        elif kind == "drop":
            del out[i]
            continue
        elif kind == "duplicate":
            out.insert(i, (channel, frame))
            continue
        elif kind == "swap":
            k = position % len(out)
            out[i], out[k] = out[k], out[i]
            continue
        elif j < len(buf):
            if kind == "flip":
                buf[j] ^= 1 << (value % 8)
            elif kind == "delete":
                del buf[j]
            else:
                buf[j] = value
        out[i] = (channel, bytes(buf))
    return out


@SETTINGS
@given(edits, st.lists(st.integers(min_value=0), max_size=10))
def test_mutated_conversation_raises_only_remote_errors(
    changes: list[tuple[str, int, int, int]], cuts: list[int]
) -> None:
    inputs = [(channel, piece) for channel, frame in mutate(CONVERSATION, changes) for piece in chunked(frame, cuts)]
    feed_expecting_only_remote_errors(make_acceptor(), inputs)


# -- credit accounting -----------------------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.integers(min_value=0), max_size=30), st.lists(st.booleans(), min_size=1, max_size=8))
def test_credit_adds_up_for_any_chunking_and_consumption_order(cuts: list[int], holds: list[bool]) -> None:
    """Every byte fed comes back as credit exactly once; partial frames come back only while nothing is held.

    Per channel, at every point: with no message held, everything fed has been returned; with messages held,
    returned credit plus theirs covers the complete frames (less a batch not yet returned), never the bytes of a
    frame still partial.
    """
    acceptor = make_acceptor()
    fed: dict[int, int] = defaultdict(int)
    returned: dict[int, int] = defaultdict(int)
    held: list[MessageReceived] = []
    hold = itertools.cycle(holds)

    # the handshake first; then each channel's whole byte stream chunked across frame boundaries, interleaved
    (first_channel, handshake), *rest = CONVERSATION
    streams: dict[int, bytes] = defaultdict(bytes)
    frame_ends: dict[int, list[int]] = defaultdict(list)
    for channel, frame in rest:
        streams[channel] += frame
        frame_ends[channel].append(len(streams[channel]))

    def give_back(event: MessageReceived) -> None:
        channel = channel_for(event.stream)
        returned[channel] += acceptor.consumed(channel, event.credit)

    def check(channel: int) -> None:
        held_credit = sum(e.credit for e in held if channel_for(e.stream) == channel)
        if held_credit:
            complete = max((end for end in frame_ends[channel] if end <= fed[channel]), default=0)
            # Consumed credit is batched while messages are held: what is withheld stays under the batch, and
            # nothing beyond the complete frames (no byte of a partial frame) has been returned.
            withheld = complete - (returned[channel] + held_credit)
            assert 0 <= withheld < session._CREDIT_BATCH
        else:
            assert returned[channel] == fed[channel]

    def feed(channel: int, piece: bytes) -> None:
        fed[channel] += len(piece)
        for event in acceptor.receive_data(channel, piece):
            if isinstance(event, CreditReturned):
                returned[event.channel] += event.amount
            elif isinstance(event, MessageReceived):
                held.append(event)
        check(channel)
        while held and not next(hold):
            event = held.pop(0)  # the application reads in order, some messages later than others
            give_back(event)
            check(channel_for(event.stream))

    for piece in chunked(handshake, cuts):
        feed(first_channel, piece)
    fed[first_channel] = returned[first_channel] = 0  # the handshake is not part of the control stream below
    control = streams.pop(CONTROL_CHANNEL)  # Ack and Close: after the data, since Close ends the data
    pieces = [[(channel, piece) for piece in chunked(data, cuts)] for channel, data in streams.items()]
    for round_ in itertools.zip_longest(*pieces):
        for item in round_:
            if item is not None:
                feed(*item)
    for piece in chunked(control, cuts):
        feed(CONTROL_CHANNEL, piece)
    while held:
        give_back(held.pop(0))
    assert returned == fed


@SETTINGS
@given(st.lists(st.integers(1, 64), min_size=1, max_size=5), st.integers(16, 200))
def test_a_window_limited_sender_never_stalls_when_the_reader_keeps_up(sizes: list[int], window: int) -> None:
    """Frames of any size relative to the window complete, as long as the reader consumes what it gets."""
    dialer, acceptor = make_dialer(), make_acceptor()
    dialer.initiate()
    for channel, frame in dialer.data_to_send():
        acceptor.receive_data(channel, frame)
    for channel, frame in acceptor.data_to_send():
        dialer.receive_data(channel, frame)
    channel = channel_for(0)
    wire = b"".join(dialer.send_data(0, bytes(n * 10)) for n in sizes)
    credit, sent, got = window, 0, []
    while sent < len(wire):
        assert credit > 0, "the sender stalled"
        n = min(credit, len(wire) - sent)
        credit -= n
        for event in acceptor.receive_data(channel, wire[sent : sent + n]):
            if isinstance(event, CreditReturned):
                credit += event.amount
            elif isinstance(event, MessageReceived):
                got.append(event.payload)
                credit += acceptor.consumed(channel, event.credit)
        sent += n
    assert got == [bytes(n * 10) for n in sizes]
    assert credit == window
