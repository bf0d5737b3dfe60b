"""`ProtocolPipe`: an asyncio protocol that is a `BytePipe`, for transports built on asyncio sockets.

TCP, TLS, Unix sockets: asyncio already gives them a transport/protocol pair. A transport author passes
``lambda: ProtocolPipe(info_factory, on_connected)`` to ``loop.create_connection`` / ``create_server`` (or the unix
variants) and gets core's `BytePipe` for free; bytes that arrive before core attaches its receiver are held, with
reading paused while they exceed a bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import cast

from .transport import BytePipe, LinkInfo, PipeReceiver

__all__ = ["ProtocolPipe"]

_JOIN_BELOW = 16 * 1024  # chunks below this are joined into one write; larger ones go as they are (no copy)
_HOLD_LIMIT = 256 * 1024  # bytes held before a receiver is attached; reading pauses above this


class ProtocolPipe(asyncio.Protocol, BytePipe):
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
        self.info = LinkInfo("unknown")

    # -- asyncio.Protocol ----------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # not isinstance: uvloop's are no subclasses
        self._transport = transport
        self.info = self._make_info(transport)
        if self._on_connected is not None:
            self._on_connected(self)

    def data_received(self, data: bytes) -> None:
        if self._receiver is not None:
            self._receiver.data_received(data)
            return
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
        """Small chunks are joined first: asyncio's TLS makes one TLS record (and one SSL_write) per chunk."""
        if self._transport is None:
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
        if len(out) == 1:
            self._transport.write(out[0])
        else:
            self._transport.writelines(out)

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
