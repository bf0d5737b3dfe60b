"""`ProtocolPipe`: an asyncio protocol that is a `BytePipe`, for transports built on asyncio sockets.

TCP, TLS, Unix sockets: asyncio already gives them a transport/protocol pair. A transport author passes
``lambda: ProtocolPipe(info_factory, on_connected)`` to ``loop.create_connection`` / ``create_server`` (or the unix
variants) and gets core's `BytePipe` for free; bytes that arrive before core attaches its receiver are held, with
reading paused while they exceed a bound.

It is an `asyncio.BufferedProtocol`: asyncio reads (and asyncio's TLS decrypts) straight into one buffer owned by
the pipe, which the receiver gets as a memoryview valid for the duration of the call (core's receiver copies what it
keeps: each message's payload, once). Without it, asyncio's TLS allocates a 256 KiB bytes object per record read
and joins the records of a read, and every layer above copied again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import cast

from .transport import BytePipe, LinkInfo, PipeReceiver

__all__ = ["ProtocolPipe"]

_JOIN_ALL = 256 * 1024  # a turn's chunks up to this many bytes in all are joined into one write
_JOIN_BELOW = 16 * 1024  # above it, chunks below this are joined; larger ones go as they are (no copy)
_HOLD_LIMIT = 256 * 1024  # bytes held before a receiver is attached; reading pauses above this
_READ_BUFFER = 256 * 1024  # what one read may fill (asyncio's TLS reads up to this much per turn)


class ProtocolPipe(asyncio.BufferedProtocol, BytePipe):
    """One asyncio connection as a `BytePipe`.

    `make_info(transport)` builds the `LinkInfo` once the connection is made (peer certificate, addresses, ALPN);
    `on_connected(pipe)` is then called (a listener hands the pipe to core there).
    """

    def __init__(
        self,
        make_info: Callable[[asyncio.BaseTransport], LinkInfo],
        on_connected: Callable[[ProtocolPipe], None] | None = None,
    ) -> None:
        self._make_info = make_info
        self._on_connected = on_connected
        self._transport: asyncio.Transport | None = None
        self._receiver: PipeReceiver | None = None
        self._held: list[bytes] = []
        self._held_size = 0
        self._eof = False
        self._lost: tuple[BaseException | None] | None = None
        self._write_paused = False
        self._buffer: memoryview | None = None  # made on the first read: a pending TLS handshake costs none
        self.info = LinkInfo("unknown")

    # -- asyncio.Protocol ----------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # not isinstance: uvloop's are no subclasses
        self._transport = transport
        self.info = self._make_info(transport)
        if self._on_connected is not None:
            self._on_connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = memoryview(bytearray(_READ_BUFFER))
        return buffer  # the receiver never keeps a view of it: each read may reuse all of it

    def buffer_updated(self, nbytes: int) -> None:
        buffer = self._buffer
        assert buffer is not None  # asyncio calls get_buffer first
        receiver = self._receiver
        if receiver is not None:
            receiver.data_received(buffer[:nbytes])
            return
        self._hold(buffer[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        """For callers that hand bytes over (a protocol switched in by `start_tls` before it knew ours)."""
        if self._receiver is not None:
            self._receiver.data_received(data)
            return
        self._hold(bytes(data))

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size > _HOLD_LIMIT and self._transport is not None:
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self._receiver is not None:
            self._receiver.eof_received()
        else:
            self._eof = True
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._receiver is not None:
            self._receiver.connection_lost(exc)
        else:
            self._lost = (exc,)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._receiver is not None:
            self._receiver.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._receiver is not None:
            self._receiver.resume_writing()

    # -- BytePipe ------------------------------------------------------------------------------------------------------
    def set_receiver(self, receiver: PipeReceiver) -> None:
        self._receiver = receiver
        held, self._held = self._held, []
        self._held_size = 0
        if held:
            receiver.data_received(b"".join(held))
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()
        if self._write_paused:
            receiver.pause_writing()
        if self._eof:
            receiver.eof_received()
        if self._lost is not None:
            receiver.connection_lost(self._lost[0])

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """One write per call where possible: asyncio's TLS makes one `SSL_write` (and at least one TLS record) per
        chunk it is given, so a turn's chunks are joined into one buffer -- all of them up to `_JOIN_ALL` bytes
        (one copy, and full 16 KiB records), above that only the runs of small ones (large chunks go as they are)."""
        transport = self._transport
        if transport is None:
            return
        if type(chunks) is not list:
            chunks = list(chunks)
        if len(chunks) == 1:
            transport.write(chunks[0])
            return
        if sum(map(len, chunks)) <= _JOIN_ALL:
            transport.write(b"".join(chunks))
            return
        out: list[bytes | bytearray | memoryview] = []
        small: list[bytes | bytearray | memoryview] = []
        for chunk in chunks:
            if len(chunk) < _JOIN_BELOW:
                small.append(chunk)
                continue
            if small:
                out.append(b"".join(small))
                small = []
            out.append(chunk)
        if small:
            out.append(small[0] if len(small) == 1 else b"".join(small))
        transport.writelines(out)

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()
