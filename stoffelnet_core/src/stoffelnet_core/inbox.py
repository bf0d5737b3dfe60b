"""Received messages waiting for the application, per (sender, stream), with tags. No I/O here.

Three ways to take a message, all FIFO per (sender, stream): the next untagged one from any sender (arrival
order), the next untagged one from one sender, or the next one with a given tag from one sender. A tagged message
is only ever taken by asking for its tag. Items are opaque to the inbox; their memory is bounded by the flow
control credit they hold until taken.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from .frames import Tag

__all__ = ["Inbox"]

T = TypeVar("T")

_COMPACT_AFTER = 64  # stale arrival tokens tolerated before compacting (amortised O(1) per message)


class _Stream(Generic[T]):
    """Arrival order on one stream: one token (the sender's queue) per untagged item.

    A token whose item was taken by `pop_from` is stale; each queue counts its own stale tokens, which are always
    its oldest ones, so they are skipped lazily and compacted once they are many.
    """

    __slots__ = ("arrivals", "stale")

    def __init__(self) -> None:
        self.arrivals: deque[_Queue[T]] = deque()
        self.stale = 0


class _Queue(Generic[T]):
    __slots__ = ("items", "sender", "stale", "stream")

    def __init__(self, sender: int, stream: _Stream[T]) -> None:
        self.items: deque[T] = deque()
        self.sender = sender
        self.stream = stream
        self.stale = 0


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
            q.stream.arrivals.append(q)
            return
        tkey = (sender, stream, tag)
        tqueue = self._tagged.get(tkey)
        if tqueue is None:
            tqueue = self._tagged[tkey] = deque()
        tqueue.append(item)

    def pop_any(self, stream: int) -> tuple[int, T] | None:
        """The oldest untagged item on `stream` from any sender."""
        st = self._streams.get(stream)
        if st is None:
            return None
        arrivals = st.arrivals
        while arrivals:
            q = arrivals.popleft()
            if q.stale:
                q.stale -= 1
                st.stale -= 1
                continue
            return q.sender, q.items.popleft()
        return None

    def pop_from(self, sender: int, stream: int, tag: Tag | None = None) -> T | None:
        """The oldest item from `sender` on `stream`: untagged when `tag` is None, else with that tag."""
        if tag is None:
            q = self._queues.get((sender, stream))
            if q is None or not q.items:
                return None
            q.stale += 1
            st = q.stream
            st.stale += 1
            if st.stale > _COMPACT_AFTER and st.stale * 2 > len(st.arrivals):
                self._compact(st)
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
        kept: deque[_Queue[T]] = deque()
        for q in st.arrivals:
            if q.stale:
                q.stale -= 1
            else:
                kept.append(q)
        st.arrivals = kept
        st.stale = 0

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
            st.arrivals = deque(x for x in st.arrivals if x is not q)
            st.stale -= q.stale
        for tkey in [k for k in self._tagged if k[0] == sender]:
            items.extend(self._tagged.pop(tkey))
        return items
