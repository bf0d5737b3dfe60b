"""Byte-credit windows for per-stream flow control, as in HTTP/2 and yamux. No I/O here.

The receiver gives the sender credit; the sender never has more bytes in flight than that credit. The receiver
grants new credit as the application *consumes* bytes (not as they arrive), so an unread stream stops its sender
and its buffered bytes stay under the window. Grants are batched (h2's habit): nothing goes out until a quarter of
the window is consumed, so updates are few and the pipe never stalls.
"""

from __future__ import annotations

from . import errors

__all__ = ["DEFAULT_WINDOW", "MAX_WINDOW", "ReceiveWindow", "SendWindow"]

DEFAULT_WINDOW = 64 * 1024  # every stream starts with this much credit, without negotiation; more is granted
MAX_WINDOW = 0x7FFFFFFF  # HTTP/2's bound: credit beyond this is a protocol violation


class SendWindow:
    """Credit the peer has granted us on one stream."""

    __slots__ = ("available",)

    def __init__(self, initial: int = DEFAULT_WINDOW) -> None:
        self.available = initial

    def consume(self, n: int) -> None:
        """We sent `n` bytes; the caller never sends more than `available`."""
        if n > self.available:
            raise errors.InvalidState(f"sending {n} bytes with only {self.available} bytes of credit")
        self.available -= n

    def grant(self, n: int) -> None:
        """The peer granted `n` more bytes; raises `FramingError` if that overflows the window."""
        if n <= 0 or self.available + n > MAX_WINDOW:
            raise errors.FramingError(f"invalid window update of {n} bytes (credit {self.available})")
        self.available += n


class ReceiveWindow:
    """Credit we granted the peer on one stream, and what the application consumed since the last grant.

    Invariant: ``outstanding + buffered + unacknowledged == size``. A window larger than the initial credit starts
    with the difference as "consumed", so the first `flush` grows the peer's credit to `size`.
    """

    __slots__ = ("_unacknowledged", "outstanding", "size")

    def __init__(self, size: int = DEFAULT_WINDOW, initial: int = DEFAULT_WINDOW) -> None:
        if not initial <= size <= MAX_WINDOW:
            raise ValueError(f"window size must be in {initial}..{MAX_WINDOW}, got {size}")
        self.size = size
        self.outstanding = initial  # credit the peer still holds
        self._unacknowledged = size - initial  # consumed (or never granted) bytes not yet granted

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed by the application."""
        return self.size - self.outstanding - self._unacknowledged

    def received(self, n: int) -> None:
        """The peer sent `n` bytes; raises `FramingError` if it had no credit for them."""
        if n > self.outstanding:
            raise errors.FramingError(
                f"flow control violated: peer sent {n} bytes with only {self.outstanding} bytes of credit"
            )
        self.outstanding -= n

    def consumed(self, n: int) -> int:
        """The application consumed `n` bytes; returns the credit to grant now (0 while batching).

        Raises `InvalidState` for more than is buffered: granting it would give the peer credit beyond the window.
        """
        if not 0 <= n <= self.size - self.outstanding - self._unacknowledged:
            raise errors.InvalidState(f"consumed {n} bytes but only {self.buffered} are buffered")
        self._unacknowledged += n
        if self._unacknowledged >= self.size // 4:
            return self.flush()
        return 0

    def flush(self) -> int:
        """Return everything consumed so far as credit to grant, batched or not."""
        grant = self._unacknowledged
        self._unacknowledged = 0
        self.outstanding += grant
        return grant
