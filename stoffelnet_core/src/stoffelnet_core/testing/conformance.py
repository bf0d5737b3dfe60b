"""The conformance suite every stoffelnet transport passes: DESIGN.md's behaviour contract as pytest tests.

A transport author proves their package with one command (the ``stoffelnet`` pytest plugin adds the option)::

    pytest --pyargs stoffelnet_core.testing.conformance --stoffelnet-transport=<name>

Each test builds a fresh `local_network` over the transport named by the ``stoffelnet_transport`` fixture and
uses only the public API. Every test is marked for pytest-asyncio (so a strict-mode project runs it unchanged)
and bounded: each wait on the network gets a few seconds and each test a budget, so a broken transport fails
instead of hanging. Nothing sleeps to synchronise; only "a send is blocked" is seen by a short timeout.

To run the suite in a project's own test tree, import the test functions into a test module and override the
``stoffelnet_transport`` fixture there (stoffelnet's ``tests/conformance/test_conformance.py`` does this).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from stoffelnet_core import ConnectionState, Network, errors
from stoffelnet_core.testing import LocalNetwork, crash, cut, local_network, sever, wait_connected

T = TypeVar("T")

WAIT = 5.0  # seconds for any one wait on the network: generous for CI, still a failure rather than a hang
BUDGET = 30.0  # seconds for a whole test, set-up and tear-down included
BLOCKED_AFTER = 0.25  # a send that has not returned after this long is taken as blocked by backpressure
KIB = 1024
MIB = 1024 * KIB
END = b"end-of-test-stream"


# -- helpers -------------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _lan(transport: str, n: int, *, clients: int = 0, **overrides: Any) -> AsyncIterator[LocalNetwork]:
    """A `local_network` whose whole life (start, test body, close) is bounded by `BUDGET`."""
    async with asyncio.timeout(BUDGET):
        async with local_network(n, transport=transport, clients=clients, **overrides) as lan:
            yield lan


async def _bounded(awaitable: Awaitable[T], what: str, seconds: float = WAIT) -> T:
    """Await `awaitable` for at most `seconds`; fail the test naming `what` if it takes longer.

    A `stoffelnet_core.errors.Timeout` raised by the awaitable itself propagates unchanged.
    """
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError as exc:
        if isinstance(exc, errors.Timeout):
            raise
        pytest.fail(f"timed out after {seconds}s waiting for {what}")


def _numbered(i: int, size: int = 8) -> bytes:
    """A payload of `size` bytes that starts with its number (so order and identity can be checked)."""
    return i.to_bytes(8, "big") + bytes(max(0, size - 8))


def _number(data: bytes) -> int:
    return int.from_bytes(data[:8], "big")


async def _flood_until_blocked(net: Network, party: int, *, stream: int, size: int, limit_bytes: int) -> int:
    """Send numbered messages until one is not accepted within `BLOCKED_AFTER`; return how many were accepted.

    The message whose send was cancelled may or may not have been accepted; `_drain_in_order` allows for that.
    """
    for i in range(limit_bytes // size + 1):
        try:
            await asyncio.wait_for(net.send(party, _numbered(i, size), stream=stream), BLOCKED_AFTER)
        except TimeoutError:
            return i
    pytest.fail(
        f"party {net.local_party_id}: send to party {party} on stream {stream} never blocked although "
        f"{limit_bytes} bytes went unread (no backpressure: memory is unbounded)"
    )


async def _drain_in_order(sender: Network, receiver: Network, *, stream: int, accepted: int) -> int:
    """Send `END` after a flood and read the flood back; every accepted message must arrive, in order, once.

    Returns the number of flood messages that arrived (`accepted`, or one more if the cancelled send got in).
    """
    receiver_id, sender_id = receiver.local_party_id, sender.local_party_id
    seen: list[int] = []

    async def read() -> None:
        while True:
            data = await _bounded(receiver.receive_from(sender_id, stream=stream), "the flood to be read back")
            if data == END:
                return
            seen.append(_number(data))
            assert len(seen) <= accepted + 1, f"more messages arrived than were sent: {seen[-3:]}"

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        await _bounded(sender.send(receiver_id, END, stream=stream), "END to be accepted once the reader resumed")
    assert seen == list(range(len(seen))), "flood arrived out of order or with gaps"
    assert accepted <= len(seen) <= accepted + 1, f"{accepted} messages accepted but {len(seen)} arrived"
    return len(seen)


async def _receive_with_cancellations(take: Callable[[], Awaitable[bytes]], count: int) -> tuple[list[bytes], int]:
    """Take `count` messages, cancelling many takes on the way; return them and the number cancelled."""
    got: list[bytes] = []
    cancelled = 0
    for attempt in range(count * 40):
        if len(got) == count:
            break
        if attempt % 3 == 0:
            try:  # a wait_for timeout cancels the take from inside
                got.append(await asyncio.wait_for(take(), 0.0005))
            except TimeoutError:
                cancelled += 1
            continue
        task = asyncio.ensure_future(take())
        for _ in range(attempt % 5):
            await asyncio.sleep(0)
        if not task.done():
            task.cancel()
        await asyncio.wait([task], timeout=WAIT)
        assert task.done(), "a cancelled receive did not finish"
        if task.cancelled():
            cancelled += 1
        else:
            got.append(task.result())
    assert len(got) == count, f"only {len(got)} of {count} messages arrived after {cancelled} cancellations"
    return got, cancelled


# -- identity and basic delivery -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_party_ids(stoffelnet_transport: str) -> None:
    """Party ids are 0..n-1 as configured; each party knows the others and its connection to each."""
    async with _lan(stoffelnet_transport, 3) as lan:
        assert len(lan) == 3
        for i, net in enumerate(lan):
            assert net.local_party_id == i
            assert net.party_count == 3
            assert sorted(net.parties()) == [0, 1, 2]
            for other in net.parties():
                if other != i:
                    conn = net.connection(other)
                    assert conn.remote_party_id == other
                    assert conn.state is ConnectionState.CONNECTED


@pytest.mark.asyncio
async def test_point_to_point(stoffelnet_transport: str) -> None:
    """A message from one party reaches the other, in both directions, to itself, and on any stream."""
    async with _lan(stoffelnet_transport, 3) as lan:
        a, b, c = lan
        await _bounded(a.send(1, b"ping"), "send 0->1")
        assert await _bounded(b.receive_from(0), "1 to receive from 0") == b"ping"
        await _bounded(b.send(0, b"pong"), "send 1->0")
        assert await _bounded(a.receive(), "0 to receive") == (1, b"pong")
        await _bounded(a.send(0, b"self"), "send 0->0")
        assert await _bounded(a.receive_from(0), "0 to receive from itself") == b"self"
        await _bounded(c.send(1, b"on stream 3", stream=3), "send 2->1 on stream 3")
        assert await _bounded(b.receive(stream=3), "1 to receive on stream 3") == (2, b"on stream 3")
        await _bounded(b.send(2, b"back on 3", stream=3), "send 1->2 on stream 3")
        assert await _bounded(c.receive_from(1, stream=3), "2 to receive from 1 on stream 3") == b"back on 3"
        # the same with the API's own timeouts given (a different path from the untimed one)
        await _bounded(a.send(2, b"timed", timeout=WAIT), "a send with a timeout")
        assert await _bounded(c.receive_from(0, timeout=WAIT), "a receive_from with a timeout") == b"timed"
        await _bounded(c.broadcast(b"timed broadcast", stream=2, timeout=WAIT), "a broadcast with a timeout")
        for net in lan:
            got = await _bounded(net.receive(stream=2, timeout=WAIT), "a receive with a timeout")
            assert got == (2, b"timed broadcast")


@pytest.mark.asyncio
async def test_broadcast_includes_self(stoffelnet_transport: str) -> None:
    """Every party gets exactly one copy of every broadcast, its own included."""
    n = 4
    async with _lan(stoffelnet_transport, n) as lan:
        for net in lan:
            await _bounded(net.broadcast(b"from %d" % net.local_party_id), "broadcast")
        for net in lan:  # a marker after the broadcast shows that no second copy is queued before it
            for other in range(n):
                await _bounded(net.send(other, END), "marker")
        for net in lan:
            by_sender: dict[int, list[bytes]] = {p: [] for p in range(n)}
            for _ in range(2 * n):
                sender, data = await _bounded(net.receive(), f"party {net.local_party_id} to receive")
                by_sender[sender].append(data)
            assert by_sender == {p: [b"from %d" % p, END] for p in range(n)}


@pytest.mark.asyncio
async def test_fifo_per_sender_and_stream(stoffelnet_transport: str) -> None:
    """Messages from several concurrent senders on two streams arrive in send order per (sender, stream)."""
    per_sender = 300
    async with _lan(stoffelnet_transport, 4) as lan:
        received: dict[tuple[int, int], list[int]] = {(s, st): [] for s in (1, 2, 3) for st in (0, 1)}

        async def send_all(net: Network) -> None:
            for i in range(per_sender):
                await net.send(0, struct.pack(">II", net.local_party_id, i), stream=i % 2)
                if i % 16 == 0:
                    await asyncio.sleep(0)  # let the other senders interleave

        async def receive_all(stream: int) -> None:
            for _ in range(3 * per_sender // 2):
                sender, data = await _bounded(lan[0].receive(stream=stream), f"a message on stream {stream}")
                claimed, i = struct.unpack(">II", data)
                assert claimed == sender, f"message from {claimed} reported as from {sender}"
                received[sender, stream].append(i)

        async with asyncio.TaskGroup() as tg:
            for stream in (0, 1):
                tg.create_task(receive_all(stream))
            for net in lan[1:]:
                tg.create_task(send_all(net))
        for (_, stream), numbers in received.items():
            assert numbers == list(range(stream, per_sender, 2))


@pytest.mark.asyncio
async def test_concurrent_receivers_share_messages(stoffelnet_transport: str) -> None:
    """Several tasks receiving from the same party and stream each get distinct messages; none is lost."""
    count = 300
    async with _lan(stoffelnet_transport, 2) as lan:
        a, b = lan
        taken: list[int] = []

        async def consume(take: Callable[[], Awaitable[bytes]], n: int) -> None:
            for _ in range(n):
                taken.append(_number(await _bounded(take(), "a message for one of the receivers")))

        async def take_any() -> bytes:
            return (await b.receive())[1]

        async with asyncio.TaskGroup() as tg:
            for _ in range(2):
                tg.create_task(consume(lambda: b.receive_from(0), count // 4))
                tg.create_task(consume(take_any, count // 4))
            for i in range(count):
                await a.send(1, _numbered(i))
        assert sorted(taken) == list(range(count))


@pytest.mark.asyncio
async def test_many_concurrent_senders(stoffelnet_transport: str) -> None:
    """Five parties each send 200 messages to everyone at once; each arrives exactly once and in order."""
    n, count = 5, 200
    async with _lan(stoffelnet_transport, n) as lan:
        received: dict[tuple[int, int], list[int]] = {(r, s): [] for r in range(n) for s in range(n)}

        async def send_all(net: Network) -> None:
            for i in range(count):
                for dest in range(n):
                    await net.send(dest, _numbered(i, 16))

        async def receive_all(net: Network) -> None:
            for _ in range(n * count):
                sender, data = await _bounded(net.receive(), f"party {net.local_party_id} to receive")
                received[net.local_party_id, sender].append(_number(data))

        async with asyncio.TaskGroup() as tg:
            for net in lan:
                tg.create_task(receive_all(net))
                tg.create_task(send_all(net))
        for key, numbers in received.items():
            assert numbers == list(range(count)), f"(receiver, sender) {key}: lost, duplicated or reordered"


@pytest.mark.asyncio
async def test_streams_are_independent(stoffelnet_transport: str) -> None:
    """A stream nobody reads fills up and blocks its sender; other streams keep delivering both ways."""
    window = 64 * KIB
    async with _lan(stoffelnet_transport, 2, receive_window_bytes=window, send_buffer_bytes=window) as lan:
        a, b = lan
        accepted = await _flood_until_blocked(a, 1, stream=1, size=8 * KIB, limit_bytes=16 * MIB)
        for stream in (2, 0):
            await _bounded(a.send(1, b"0->1 on %d" % stream, stream=stream), f"send on stream {stream}")
            assert await _bounded(b.receive_from(0, stream=stream), "stream delivery") == b"0->1 on %d" % stream
            await _bounded(b.send(0, b"1->0 on %d" % stream, stream=stream), f"send on stream {stream}")
            assert await _bounded(a.receive_from(1, stream=stream), "stream delivery") == b"1->0 on %d" % stream
        await _drain_in_order(a, b, stream=1, accepted=accepted)


@pytest.mark.asyncio
async def test_tags_in_any_order(stoffelnet_transport: str) -> None:
    """A tagged message goes to the receive asking for its tag, in any order; untagged ones never see it."""
    async with _lan(stoffelnet_transport, 2) as lan:
        a, b = lan
        for tag in (3, 1, 2):
            await _bounded(a.send(1, b"tag %d" % tag, tag=tag), "tagged send")
        await _bounded(a.send(1, b"bytes tag", tag=b"round-1"), "tagged send")
        await _bounded(a.send(1, b"first of tag 9", tag=9), "tagged send")
        await _bounded(a.send(1, b"second of tag 9", tag=9), "tagged send")
        await _bounded(a.send(1, b"untagged"), "untagged send")
        # the untagged message was sent last, yet the untagged receives return it: they skip tagged ones
        assert await _bounded(b.receive(), "untagged receive") == (0, b"untagged")
        for tag in (2, 1, 3):
            assert await _bounded(b.receive_from(0, tag=tag), f"tag {tag}") == b"tag %d" % tag
        assert await _bounded(b.receive_from(0, tag=b"round-1"), "bytes tag") == b"bytes tag"
        assert await _bounded(b.receive_from(0, tag=9), "tag 9") == b"first of tag 9"
        assert await _bounded(b.receive_from(0, tag=9), "tag 9 again") == b"second of tag 9"
        # a receive for a tag not yet arrived is woken by it, and an untagged receive_from skips tags too
        waiter = asyncio.ensure_future(b.receive_from(0, tag=7))
        await _bounded(a.send(1, b"tag 7 on another stream", tag=7, stream=1), "tagged send")
        await _bounded(a.send(1, b"tag 7", tag=7), "tagged send")
        await _bounded(a.send(1, b"plain"), "untagged send")
        assert await _bounded(b.receive_from(0), "untagged receive_from") == b"plain"
        assert await _bounded(waiter, "the tag 7 waiter") == b"tag 7"
        assert await _bounded(b.receive_from(0, tag=7, stream=1), "tag 7 on stream 1") == b"tag 7 on another stream"


@pytest.mark.asyncio
async def test_receive_from_filters_by_sender(stoffelnet_transport: str) -> None:
    """`receive_from(p)` returns only p's messages; the others stay queued for `receive()`."""
    async with _lan(stoffelnet_transport, 3) as lan:
        a, b, c = lan
        await _bounded(b.send(0, b"from 1, first"), "send 1->0")
        await _bounded(b.send(0, b"from 1, second"), "send 1->0")
        await _bounded(c.send(0, b"from 2"), "send 2->0")
        assert await _bounded(a.receive_from(1), "receive_from 1") == b"from 1, first"
        assert await _bounded(a.receive_from(2), "receive_from 2") == b"from 2"
        assert await _bounded(a.receive(), "receive") == (1, b"from 1, second")
        waiter = asyncio.ensure_future(a.receive_from(2))
        await _bounded(b.send(0, b"from 1, third"), "send 1->0")
        await _bounded(c.send(0, b"from 2, later"), "send 2->0")
        assert await _bounded(waiter, "receive_from 2") == b"from 2, later"
        assert await _bounded(a.receive(), "receive") == (1, b"from 1, third")


# -- sizes ---------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_max_size_message(stoffelnet_transport: str) -> None:
    """A payload of exactly `max_message_size` passes and arrives intact, to a peer and to self."""
    frame = 1 * MIB
    async with _lan(stoffelnet_transport, 2, max_frame_size=frame) as lan:
        a, b = lan
        size = a.max_message_size
        assert frame - KIB <= size <= frame, f"max_message_size {size} for a max_frame_size of {frame}"
        payload = random.Random(1).randbytes(size)
        await _bounded(a.send(1, payload), "a max-size send")
        assert await _bounded(b.receive_from(0), "a max-size message") == payload
        await _bounded(a.send(0, payload), "a max-size send to self")
        assert await _bounded(a.receive_from(0), "a max-size message from self") == payload
        await _bounded(b.send(0, b"still fine"), "a small send after")
        assert await _bounded(a.receive_from(1), "a small message after") == b"still fine"


@pytest.mark.asyncio
async def test_max_size_message_with_tags(stoffelnet_transport: str) -> None:
    """A max-size payload with a large tag is either refused with `SendError` or delivered; never fatal."""
    frame = 1 * MIB
    async with _lan(stoffelnet_transport, 2, max_frame_size=frame) as lan:
        a, b = lan
        payload = random.Random(2).randbytes(a.max_message_size)
        for tag in (2**64 - 1, -(2**63), b"t" * 32):
            try:
                await _bounded(a.send(1, payload, tag=tag), "a max-size tagged send")
            except errors.SendError:
                continue
            assert await _bounded(b.receive_from(0, tag=tag), "a max-size tagged message") == payload
        await _bounded(a.send(1, b"after"), "a send after")
        assert await _bounded(b.receive_from(0), "the connection to still work") == b"after"


@pytest.mark.asyncio
async def test_large_message_default_config(stoffelnet_transport: str) -> None:
    """An 8 MiB message passes with the default configuration."""
    async with _lan(stoffelnet_transport, 2) as lan:
        a, b = lan
        payload = random.Random(3).randbytes(8 * MIB)
        await _bounded(a.send(1, payload), "an 8 MiB send")
        assert await _bounded(b.receive_from(0), "an 8 MiB message") == payload
        await _bounded(b.send(1, payload), "an 8 MiB send to self")
        assert await _bounded(b.receive_from(1), "an 8 MiB message from self") == payload


@pytest.mark.asyncio
async def test_oversize_rejected(stoffelnet_transport: str) -> None:
    """One byte over `max_message_size` raises `SendError` and sends nothing; the connection keeps working."""
    async with _lan(stoffelnet_transport, 3, max_frame_size=256 * KIB) as lan:
        a = lan[0]
        too_big = bytes(a.max_message_size + 1)
        for dest in (1, 0):
            with pytest.raises(errors.SendError):
                await _bounded(a.send(dest, too_big), "an oversize send")
            with pytest.raises(errors.SendError):
                await _bounded(a.send(dest, too_big, tag=5), "an oversize tagged send")
        with pytest.raises(errors.SendError):
            await _bounded(a.broadcast(too_big), "an oversize broadcast")
        await _bounded(a.broadcast(b"after"), "a broadcast after")
        for net in lan:
            assert await _bounded(net.receive_from(0), "the next message from 0") == b"after"
        assert a.connection(1).state is ConnectionState.CONNECTED


@pytest.mark.asyncio
async def test_empty_payload(stoffelnet_transport: str) -> None:
    """An empty message is a message: to a peer, to self, by broadcast, with a tag."""
    async with _lan(stoffelnet_transport, 2) as lan:
        a, b = lan
        await _bounded(a.send(1, b""), "an empty send")
        await _bounded(a.send(1, b"", tag=4), "an empty tagged send")
        await _bounded(a.broadcast(b""), "an empty broadcast")
        assert await _bounded(b.receive(), "an empty message") == (0, b"")
        assert await _bounded(b.receive_from(0, tag=4), "an empty tagged message") == b""
        assert await _bounded(b.receive_from(0), "an empty broadcast") == b""
        got = await _bounded(a.receive_from(0), "an empty broadcast to self")
        assert got == b""
        assert type(got) is bytes


@pytest.mark.asyncio
async def test_bytes_like_payloads(stoffelnet_transport: str) -> None:
    """bytearray and memoryview are accepted; the receiver gets bytes; later buffer changes do not leak."""
    async with _lan(stoffelnet_transport, 2) as lan:
        a, b = lan
        buffers = [bytearray(b"bytearray to peer"), bytearray(b"xxmemoryview to peerxx")]
        await _bounded(a.send(1, buffers[0]), "a bytearray send")
        await _bounded(a.send(1, memoryview(buffers[1])[2:-2]), "a memoryview send")
        await _bounded(a.send(1, memoryview(b"readonly view")), "a read-only memoryview send")
        self_buffer = bytearray(b"bytearray to self")
        await _bounded(a.send(0, self_buffer), "a bytearray send to self")
        cast_buffer = bytearray(b"view to self")
        await _bounded(a.send(0, memoryview(cast_buffer)), "a memoryview send to self")
        wide = bytearray(b"broadcast")
        await _bounded(a.broadcast(wide), "a bytearray broadcast")
        for buf in [*buffers, self_buffer, cast_buffer, wide]:
            buf[:] = b"\xee" * len(buf)
        expected_b = [b"bytearray to peer", b"memoryview to peer", b"readonly view", b"broadcast"]
        expected_a = [b"bytearray to self", b"view to self", b"broadcast"]
        for net, expected in ((b, expected_b), (a, expected_a)):
            for want in expected:
                got = await _bounded(net.receive_from(0), "a bytes-like message")
                assert got == want
                assert type(got) is bytes


# -- clients -------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_clients(stoffelnet_transport: str) -> None:
    """Clients get ids 0..m-1, the same at every party; messages flow both ways; unknown ids raise."""
    n, m = 2, 2
    async with _lan(stoffelnet_transport, n, clients=m) as lan:
        assert sorted(cli.client_id for cli in lan.clients) == list(range(m))
        for net in lan:
            await _bounded(net.wait_for_clients(m, timeout=WAIT), "clients to connect")
            assert sorted(net.clients()) == list(range(m))
        for cli in lan.clients:
            assert cli.party_count == n
            for party in range(n):
                await _bounded(cli.send(party, b"input of %d" % cli.client_id), "a client send")
        for net in lan:
            got = {}
            for _ in range(m):
                client_id, data = await _bounded(net.receive_from_client(), "a client message")
                got[client_id] = data
            assert got == {k: b"input of %d" % k for k in range(m)}
        # receive_from_client(client=k) picks that client's message
        for cli in reversed(lan.clients):
            await _bounded(cli.send(0, b"again %d" % cli.client_id), "a client send")
        for k in range(m):
            assert await _bounded(lan[0].receive_from_client(k), "a message from client k") == (
                k,
                b"again %d" % k,
            )
        for net in lan:
            for cli in lan.clients:
                await _bounded(net.send_to_client(cli.client_id, b"output %d" % net.local_party_id), "send_to_client")
        for cli in lan.clients:
            assert await _bounded(cli.receive_from(1), "output from party 1") == b"output 1"
            assert await _bounded(cli.receive(), "output from party 0") == (0, b"output 0")
        with pytest.raises(errors.ClientNotFound):
            await _bounded(lan[0].send_to_client(99, b"nobody"), "send to an unknown client")
        with pytest.raises(errors.Timeout):
            await _bounded(lan[0].wait_for_clients(m + 1, timeout=0.05), "wait_for_clients to time out")


# -- errors, timeouts, cancellation --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_unknown_party(stoffelnet_transport: str) -> None:
    """Party ids outside 0..n-1 raise `PartyNotFound` naming the id, at once."""
    async with _lan(stoffelnet_transport, 2) as lan:
        for bad in (99, -1, 2):
            with pytest.raises(errors.PartyNotFound) as info:
                await _bounded(lan[0].send(bad, b"x"), "send to an unknown party")
            assert info.value.party == bad
            with pytest.raises(errors.PartyNotFound):
                await _bounded(lan[0].receive_from(bad), "receive_from an unknown party")
        await _bounded(lan[0].send(1, b"still fine"), "a send after")
        assert await _bounded(lan[1].receive_from(0), "a message after") == b"still fine"


# A local misuse: the library's own error, or the builtin TypeError/ValueError a Python API raises for bad arguments.
_MISUSE = (errors.StoffelnetError, TypeError, ValueError)
_BAD_STREAMS: list[Any] = [-1, 2**32, 1.5, "1", None]
_BAD_TAGS: list[Any] = [2**64, -(2**64) - 1, 1.5, "tag", [1]]
_BAD_PAYLOADS: list[Any] = ["text", 123, None, [1, 2]]


async def _misuse_problem(awaitable: Awaitable[Any], what: str) -> str | None:
    """None if `awaitable` raised a local-misuse error at once; else a description of what went wrong."""
    try:
        await asyncio.wait_for(awaitable, 1.0)
    except (errors.ConnectionLost, errors.FramingError) as exc:
        return f"{what}: broke the connection ({exc!r})"
    except errors.Timeout as exc:
        return f"{what}: raised {exc!r}, not an argument error"
    except TimeoutError:
        return f"{what}: hung instead of raising"
    except _MISUSE:
        return None
    return f"{what}: accepted"


@pytest.mark.asyncio
async def test_bad_arguments_are_refused_at_the_call(stoffelnet_transport: str) -> None:
    """A bad stream id, tag or payload raises at the call, to a peer and to self alike; nothing breaks."""
    async with _lan(stoffelnet_transport, 2) as lan:
        a, b = lan
        problems: list[str] = []
        cases: list[tuple[str, Any, dict[str, Any]]] = [
            *((f"stream={s!r}", b"x", {"stream": s}) for s in _BAD_STREAMS),
            *((f"tag={t!r}", b"x", {"tag": t}) for t in _BAD_TAGS),
            *((f"data={d!r}", d, {}) for d in _BAD_PAYLOADS),
        ]
        for dest in (1, 0):
            for what, data, kwargs in cases:
                problem = await _misuse_problem(a.send(dest, data, **kwargs), f"send to {dest} with {what}")
                if problem is not None:
                    problems.append(problem)
                    if "broke the connection" in problem:
                        pytest.fail("\n".join(problems))
            await _bounded(a.send(dest, b"after the bad sends"), "a good send after the bad ones")
            got = await _bounded(lan[dest].receive_from(0), "the next message from 0")
            if got != b"after the bad sends":
                problems.append(f"a refused send to {dest} delivered {got!r}")
        for stream in _BAD_STREAMS:
            problems.append(await _misuse_problem(a.receive(stream=stream), f"receive(stream={stream!r})") or "")
            problems.append(
                await _misuse_problem(a.receive_from(1, stream=stream), f"receive_from(1, stream={stream!r})") or ""
            )
        for tag in _BAD_TAGS:
            problems.append(await _misuse_problem(a.receive_from(1, tag=tag), f"receive_from(1, tag={tag!r})") or "")
        problems = [p for p in problems if p]
        assert not problems, "bad arguments were not refused at the call:\n" + "\n".join(problems)
        assert a.connection(1).state is ConnectionState.CONNECTED
        assert b.connection(0).state is ConnectionState.CONNECTED


@pytest.mark.asyncio
async def test_self_delivery_is_bounded(stoffelnet_transport: str) -> None:
    """Messages to self obey the same limits: a party that never reads its own messages is made to wait."""
    window = 64 * KIB
    async with _lan(stoffelnet_transport, 2, receive_window_bytes=window, send_buffer_bytes=window) as lan:
        a = lan[0]
        accepted = await _flood_until_blocked(a, 0, stream=0, size=4 * KIB, limit_bytes=16 * MIB)
        assert accepted * 4 * KIB <= 2 * window + 2 * a.max_message_size
        await _bounded(a.send(1, b"others unaffected"), "a send to another party")
        assert await _bounded(lan[1].receive_from(0), "a message to another party") == b"others unaffected"
        await _drain_in_order(a, a, stream=0, accepted=accepted)


@pytest.mark.asyncio
async def test_receive_timeout(stoffelnet_transport: str) -> None:
    """A receive with a timeout raises `errors.Timeout` (a builtin `TimeoutError` too) and takes nothing."""
    async with _lan(stoffelnet_transport, 2) as lan:
        a, b = lan
        loop = asyncio.get_running_loop()
        for receive in (lambda: b.receive(timeout=0.05), lambda: b.receive_from(0, timeout=0.05)):
            started = loop.time()
            with pytest.raises(errors.Timeout) as info:
                await _bounded(receive(), "a receive with a timeout to time out")
            assert isinstance(info.value, TimeoutError)
            assert loop.time() - started >= 0.04
        with pytest.raises(errors.Timeout):
            await _bounded(b.receive_from(0, tag=1, timeout=0.05), "a tagged receive to time out")
        await _bounded(a.send(1, b"after the timeouts"), "a send")
        assert await _bounded(b.receive(timeout=WAIT), "the message") == (0, b"after the timeouts")


@pytest.mark.asyncio
async def test_cancelled_receive_loses_nothing(stoffelnet_transport: str) -> None:
    """Receives cancelled over and over while messages arrive lose and reorder nothing."""
    count = 300
    async with _lan(stoffelnet_transport, 2) as lan:
        a, b = lan

        async def send_all() -> None:
            for i in range(2 * count):
                await a.send(1, _numbered(i))
                if i % 3 == 0:
                    await asyncio.sleep(0)

        async def take_from() -> bytes:
            return await b.receive_from(0)

        async def take_any() -> bytes:
            sender, data = await b.receive()
            assert sender == 0
            return data

        async with asyncio.TaskGroup() as tg:
            tg.create_task(send_all())
            first, cancelled_first = await _receive_with_cancellations(take_from, count)
            second, cancelled_second = await _receive_with_cancellations(take_any, count)
        assert [_number(d) for d in first + second] == list(range(2 * count))
        assert cancelled_first > 0
        assert cancelled_second > 0
        await _bounded(a.send(1, END), "a marker")
        assert await _bounded(b.receive_from(0), "the marker, with nothing before it") == END


@pytest.mark.asyncio
async def test_bounded_memory_under_a_stopped_reader(stoffelnet_transport: str) -> None:
    """A reader that stops makes the sender wait; buffers stay within their limits; nothing is lost after."""
    window = send_buffer = 64 * KIB
    size = 4 * KIB
    async with _lan(
        stoffelnet_transport,
        2,
        receive_window_bytes=window,
        send_buffer_bytes=send_buffer,
        max_frame_size=256 * KIB,
    ) as lan:
        a, b = lan
        max_message = a.max_message_size
        accepted = await _flood_until_blocked(a, 1, stream=0, size=size, limit_bytes=16 * MIB)
        with pytest.raises(errors.Timeout):
            await _bounded(a.send(1, b"does not fit", timeout=0.05), "a send with a timeout on a full buffer")
        receiving = b.stats().peers[0].receive_buffered
        sending = a.stats().peers[1].send_buffered
        assert receiving <= window + max_message, f"receiver holds {receiving} bytes, window {window}"
        assert sending <= send_buffer + size + 64, f"sender holds {sending} bytes, send buffer {send_buffer}"
        assert accepted * size <= window + send_buffer + 2 * max_message, (
            f"{accepted * size} bytes accepted with nobody reading"
        )
        await _drain_in_order(a, b, stream=0, accepted=accepted)
        assert b.stats().peers[0].receive_buffered == 0


@pytest.mark.asyncio
async def test_stats_count_messages(stoffelnet_transport: str) -> None:
    """Per-peer statistics count the messages and bytes sent and received."""
    async with _lan(stoffelnet_transport, 2) as lan:
        a, b = lan
        for _ in range(3):
            await _bounded(a.send(1, bytes(10)), "a send")
        for _ in range(3):
            await _bounded(b.receive_from(0), "a message")
        sent, received = a.stats().peers[1], b.stats().peers[0]
        assert sent.messages_sent == 3
        assert sent.bytes_sent >= 30
        assert received.messages_received == 3
        assert received.bytes_received >= 30
        assert received.receive_buffered == 0
        assert sent.state is ConnectionState.CONNECTED


# -- closing and losing connections --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_close_and_state_transitions(stoffelnet_transport: str) -> None:
    """close() delivers what was accepted, then peers see CLOSED and `StreamClosed`; later sends fail."""
    async with _lan(stoffelnet_transport, 3) as lan:
        a, b, c = lan
        assert a.connection(1).state is ConnectionState.CONNECTED
        assert b.connection(0).state is ConnectionState.CONNECTED
        for i in range(3):
            await _bounded(a.send(1, _numbered(i, 32 * KIB)), "a send before close")
        await _bounded(a.send(2, b"to 2 before close"), "a send before close")
        pending = [asyncio.ensure_future(a.receive()), asyncio.ensure_future(a.receive_from(1, tag=3))]
        await asyncio.sleep(0)
        await _bounded(a.close(), "close")
        for waiter in pending:  # receives waiting on a network that closes are released, not left hanging
            with pytest.raises(errors.InvalidState):
                await _bounded(waiter, "a receive pending during close to fail")
        assert a.connection(1).state is ConnectionState.CLOSED
        assert a.connection(2).state is ConnectionState.CLOSED
        with pytest.raises(errors.InvalidState):
            await _bounded(a.send(1, b"late"), "a send after close")
        with pytest.raises(errors.InvalidState):
            await _bounded(a.broadcast(b"late"), "a broadcast after close")
        await _bounded(a.close(), "a second close")
        for i in range(3):
            assert _number(await _bounded(b.receive_from(0), "a message queued before close")) == i
        with pytest.raises(errors.StreamClosed):
            await _bounded(b.receive_from(0), "receive_from a closed party")
        assert b.connection(0).state is ConnectionState.CLOSED
        assert await _bounded(c.receive_from(0), "a message queued before close") == b"to 2 before close"
        with pytest.raises(errors.StreamClosed):
            await _bounded(c.receive_from(0), "receive_from a closed party")
        assert c.connection(0).state is ConnectionState.CLOSED
        await _bounded(b.send(2, b"1->2 after 0 closed"), "a send between the others")
        assert await _bounded(c.receive_from(1), "a message between the others") == b"1->2 after 0 closed"
        await _bounded(c.send(1, b"2->1 after 0 closed"), "a send between the others")
        assert await _bounded(b.receive(), "a message between the others") == (2, b"2->1 after 0 closed")


@pytest.mark.asyncio
async def test_sever_resumes_with_nothing_lost_or_duplicated(stoffelnet_transport: str) -> None:
    """Connections cut mid-flow come back by themselves: every accepted message arrives once, in order."""
    count, cuts, size = 900, 3, 300
    async with _lan(stoffelnet_transport, 3) as lan:
        a, b, c = lan
        got: dict[tuple[int, int], list[int]] = {(0, 0): [], (0, 1): [], (1, 0): []}  # (sender, stream) -> numbers

        async def read(receiver: Network, sender: int, stream: int, expect: int) -> None:
            while len(got[sender, stream]) < expect:
                data = await _bounded(receiver.receive_from(sender, stream=stream), "a message across the cuts")
                got[sender, stream].append(_number(data))

        async def both_up() -> None:
            # the end that was not cut notices only once it yields, so one end up proves little about the other
            while not (a.connection(1).is_connected() and b.connection(0).is_connected()):
                await wait_connected(a, 1)
                await wait_connected(b, 0)

        async def write() -> None:
            for i in range(count):
                await _bounded(a.send(1, _numbered(i, size), stream=i % 2), "a send across the cuts")
                await _bounded(b.send(0, _numbered(i, size)), "a send across the cuts")
                if i % (count // (cuts + 1)) == count // (cuts + 1) - 1 and i < count - 1:
                    await _bounded(both_up(), "the connection to come back before the next cut")
                    await _bounded(cut(a, 1) if i % 2 else cut(b, 0), "a cut connection to resume")  # either end

        async with asyncio.TaskGroup() as tg:
            tg.create_task(write())
            tg.create_task(read(b, 0, 0, (count + 1) // 2))
            tg.create_task(read(b, 0, 1, count // 2))
            tg.create_task(read(a, 1, 0, count))
        assert got[0, 0] == list(range(0, count, 2)), "stream 0 lost, duplicated or reordered messages"
        assert got[0, 1] == list(range(1, count, 2)), "stream 1 lost, duplicated or reordered messages"
        assert got[1, 0] == list(range(count)), "the other direction lost, duplicated or reordered messages"
        await _bounded(both_up(), "the connection to come back")
        for net, peer in ((a, 1), (b, 0)):
            assert net.stats().peers[peer].reconnects == cuts, (net.local_party_id, net.stats().peers[peer])
        for x, y in ((a, c), (c, b)):
            await _bounded(x.send(y.local_party_id, b"unaffected"), "a send between other parties")
            assert await _bounded(y.receive_from(x.local_party_id), "a message between other parties") == b"unaffected"


@pytest.mark.asyncio
async def test_a_party_that_never_comes_back_is_connection_lost(stoffelnet_transport: str) -> None:
    """A crashed party is waited for `resume_ms`, then every waiter on it gets `ConnectionLost` naming it."""
    async with _lan(stoffelnet_transport, 3, resume_ms=600, timeout_ms=3000) as lan:
        a, b, c = lan
        waiters = [asyncio.ensure_future(a.receive_from(1)), asyncio.ensure_future(c.receive_from(1))]
        try:
            await crash(b)
            for waiter in waiters:
                with pytest.raises(errors.ConnectionLost, match=r"not resumed within 0\.6s") as info:
                    await _bounded(waiter, "a waiter on the crashed party to fail")
                assert info.value.peer == 1
        finally:
            for waiter in waiters:
                waiter.cancel()
        with pytest.raises(errors.ConnectionLost):
            await _bounded(a.send(1, b"to nobody"), "a send to the crashed party to fail")
        await _bounded(a.send(2, b"unaffected"), "a send between the others")
        assert await _bounded(c.receive_from(0), "a message between the others") == b"unaffected"


@pytest.mark.asyncio
async def test_sever_without_resume_raises_connection_lost(stoffelnet_transport: str) -> None:
    """With resume off, an unexpected loss fails each waiter on the peer with `ConnectionLost` naming it."""
    window = 64 * KIB
    async with _lan(
        stoffelnet_transport,
        3,
        receive_window_bytes=window,
        send_buffer_bytes=window,
        timeout_ms=3000,
        resume_ms=0,
    ) as lan:
        a, b, c = lan
        receiving = asyncio.ensure_future(a.receive_from(1))
        any_party = asyncio.ensure_future(a.receive())  # not a waiter on party 1 alone: must survive the loss
        accepted = await _flood_until_blocked(a, 1, stream=1, size=8 * KIB, limit_bytes=16 * MIB)
        sending = asyncio.ensure_future(a.send(1, _numbered(accepted + 1, 8 * KIB), stream=1))
        try:
            for _ in range(5):
                await asyncio.sleep(0)
            assert not receiving.done()
            assert not sending.done(), "the send was expected to be blocked by backpressure"
            sever(a, 1)
            for waiter, what in ((receiving, "a receive_from waiter"), (sending, "a blocked send")):
                with pytest.raises(errors.ConnectionLost) as info:
                    await _bounded(waiter, f"{what} to fail")
                assert info.value.peer == 1, f"{what}: ConnectionLost names {info.value.peer!r}, not party 1"
            assert not any_party.done(), "receive() from any party failed because one party was lost"
            await _bounded(c.send(0, b"for the pending receive"), "a send from an unaffected party")
            assert await _bounded(any_party, "the pending receive()") == (2, b"for the pending receive")
        finally:
            for task in (receiving, sending, any_party):
                task.cancel()
        with pytest.raises(errors.ConnectionLost) as info:
            await _bounded(b.receive_from(0), "the other side to notice the loss")
        assert info.value.peer == 0
        assert a.connection(1).state is ConnectionState.DISCONNECTED
        assert b.connection(0).state is ConnectionState.DISCONNECTED
        for x, y in ((a, c), (c, a), (b, c), (c, b)):
            await _bounded(x.send(y.local_party_id, b"unaffected"), "a send between unaffected parties")
            got = await _bounded(y.receive_from(x.local_party_id), "a message between unaffected parties")
            assert got == b"unaffected"
