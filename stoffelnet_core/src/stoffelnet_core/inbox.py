"""Received messages waiting for the application, per (sender, stream), with tags. No I/O here.

Three ways to take a message, all FIFO per (sender, stream): the next untagged one from any sender (arrival
order), the next untagged one from one sender, or the next one with a given tag from one sender. A tagged message
is only ever taken by asking for its tag. Items are opaque to the inbox; their memory is bounded by the flow
control credit they hold until taken.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

from .frames import Tag

__all__ = ["Inbox"]

T = TypeVar("T")

_COMPACT_AFTER = 64  # arrival runs tolerated before the first compaction (amortised O(1) per push)


class _Stream(Generic[T]):
    """Arrival order on one stream, as runs: ``[queue, count]`` says that `count` untagged items arrived in a row
    in that sender's queue (a read delivers a sender's messages together: one run, not one token per message).

    An item taken by `pop_from` leaves its token behind, stale; each queue counts its own stale tokens, which are
    always its oldest ones, so `pop_any` skips them lazily, and a compaction drops them once runs pile up.
    """

    __slots__ = ("arrivals", "limit")

    def __init__(self) -> None:
        self.arrivals: deque[list[_Queue[T] | int]] = deque()
        self.limit = _COMPACT_AFTER  # compact when there are more runs than this


class _Queue(Generic[T]):
    __slots__ = ("items", "sender", "stale", "stream")

    def __init__(self, sender: int, stream: _Stream[T]) -> None:
        self.items: deque[T] = deque()
        self.sender = sender
        self.stream = stream
        self.stale = 0  # tokens of this queue in `stream.arrivals` whose items `pop_from` took


class Inbox(Generic[T]):
    """Queues of received items, keyed by sender and stream (and tag)."""

    def __init__(self) -> None:
        self._queues: dict[tuple[int, int], _Queue[T]] = {}
        self._streams: dict[int, _Stream[T]] = {}
        self._tagged: dict[tuple[int, int, Tag], deque[T]] = {}

    def _queue(self, sender: int, stream: int) -> _Queue[T]:
        st = self._streams.get(stream)
        if st is None:
            st = self._streams[stream] = _Stream()
        q = self._queues[(sender, stream)] = _Queue(sender, st)
        return q

    def push(self, sender: int, stream: int, tag: Tag | None, item: T) -> None:
        if tag is None:
            q = self._queues.get((sender, stream))
            if q is None:
                q = self._queue(sender, stream)
            q.items.append(item)
            arrivals = q.stream.arrivals
            if arrivals and arrivals[-1][0] is q:
                arrivals[-1][1] += 1  # type: ignore[operator]
            else:
                arrivals.append([q, 1])
                if len(arrivals) > q.stream.limit:
                    self._compact(q.stream)
            return
        tkey = (sender, stream, tag)
        tqueue = self._tagged.get(tkey)
        if tqueue is None:
            tqueue = self._tagged[tkey] = deque()
        tqueue.append(item)

    def push_untagged(self, sender: int, stream: int, items: Iterable[T]) -> None:
        """`push` of several untagged items in a row (one run of arrival order)."""
        q = self._queues.get((sender, stream))
        if q is None:
            q = self._queue(sender, stream)
        before = len(q.items)
        q.items.extend(items)
        count = len(q.items) - before
        if not count:
            return
        arrivals = q.stream.arrivals
        if arrivals and arrivals[-1][0] is q:
            arrivals[-1][1] += count  # type: ignore[operator]
        else:
            arrivals.append([q, count])
            if len(arrivals) > q.stream.limit:
                self._compact(q.stream)

    def pop_any(self, stream: int) -> tuple[int, T] | None:
        """The oldest untagged item on `stream` from any sender."""
        st = self._streams.get(stream)
        if st is None:
            return None
        arrivals = st.arrivals
        while arrivals:
            run = arrivals[0]
            q: _Queue[T] = run[0]  # type: ignore[assignment]
            left: int = run[1]  # type: ignore[assignment]
            if q.stale:  # the run's first tokens are stale: their items were taken by pop_from
                skip = min(q.stale, left)
                q.stale -= skip
                left -= skip
            else:
                left -= 1
                item = q.items.popleft()
                if left:
                    run[1] = left
                else:
                    arrivals.popleft()
                return q.sender, item
            if left:
                run[1] = left
            else:
                arrivals.popleft()
        return None

    def pop_from(self, sender: int, stream: int, tag: Tag | None = None) -> T | None:
        """The oldest item from `sender` on `stream`: untagged when `tag` is None, else with that tag."""
        if tag is None:
            q = self._queues.get((sender, stream))
            if q is None or not q.items:
                return None
            q.stale += 1
            return q.items.popleft()
        tkey = (sender, stream, tag)
        tqueue = self._tagged.get(tkey)
        if not tqueue:
            return None
        item = tqueue.popleft()
        if not tqueue:
            del self._tagged[tkey]
        return item

    @staticmethod
    def _compact(st: _Stream[T]) -> None:
        """Drop the stale tokens (each queue's oldest) and merge the runs they separated."""
        kept: deque[list[_Queue[T] | int]] = deque()
        for run in st.arrivals:
            q: _Queue[T] = run[0]  # type: ignore[assignment]
            left: int = run[1]  # type: ignore[assignment]
            if q.stale:
                skip = min(q.stale, left)
                q.stale -= skip
                left -= skip
            if not left:
                continue
            if kept and kept[-1][0] is q:
                kept[-1][1] += left  # type: ignore[operator]
            else:
                kept.append([q, left])
        st.arrivals = kept
        st.limit = max(_COMPACT_AFTER, 2 * len(kept))

    def count(self, sender: int, stream: int) -> int:
        """Untagged items waiting from `sender` on `stream`."""
        q = self._queues.get((sender, stream))
        return len(q.items) if q is not None else 0

    def drain_sender(self, sender: int) -> list[T]:
        """Remove and return every item from `sender` (for a peer whose messages will never be read)."""
        items: list[T] = []
        for key in [k for k in self._queues if k[0] == sender]:
            q = self._queues.pop(key)
            items.extend(q.items)
            st = q.stream
            st.arrivals = deque(run for run in st.arrivals if run[0] is not q)
        for tkey in [k for k in self._tagged if k[0] == sender]:
            items.extend(self._tagged.pop(tkey))
        return items
