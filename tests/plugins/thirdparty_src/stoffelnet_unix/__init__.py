"""A third-party transport, as someone outside this project would write it: stoffelnet over Unix sockets.

The test copies this package into a temporary folder with a ``*.dist-info`` that registers the entry point
``unix = stoffelnet_unix`` in ``stoffelnet.transports``, then proves it with the shipped conformance suite. A party's
``host:port`` names a socket file in the temporary directory. Peers on one machine's Unix sockets are taken as
trusted (a test transport; a real one would check SO_PEERCRED or run TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import ClassVar

from stoffelnet_core import PLUGIN_API_VERSION, errors, hookimpl
from stoffelnet_core.aio import ProtocolPipe
from stoffelnet_core.ids import Address, ClientType
from stoffelnet_core.transport import BytePipe, LinkInfo, Listener, Transport

__all__ = ["PLUGIN_API_VERSION", "UnixTransport", "stoffelnet_register_transports"]


def _path(address: Address) -> str:
    return os.path.join(tempfile.gettempdir(), f"stoffelnet-unix-{address.host}-{address.port}.sock")


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _Listener(Listener):
    def __init__(self, address: Address, server: asyncio.Server, path: str) -> None:
        self.address = address
        self._server = server
        self._path = path

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        _unlink(self._path)


class UnixTransport(Transport):
    name: ClassVar[str] = "unix"

    async def listen(self, address: Address, on_pipe: Callable[[BytePipe], None]) -> Listener:
        path = _path(address)
        _unlink(path)

        def info(_: asyncio.BaseTransport) -> LinkInfo:
            return LinkInfo(self.name, local_address=address, trusted=True)

        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_unix_server(lambda: ProtocolPipe(info, on_pipe), path)
        except OSError as exc:
            raise errors.InitializationFailed(f"cannot listen on {path}: {exc}") from exc
        return _Listener(address, server, path)

    async def dial(self, address: Address, *, role: ClientType) -> BytePipe:
        def info(_: asyncio.BaseTransport) -> LinkInfo:
            return LinkInfo(self.name, remote_address=address, alpn=role.value, trusted=True)

        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.context.connect_timeout):
                _, pipe = await loop.create_unix_connection(lambda: ProtocolPipe(info), _path(address))
        except (OSError, TimeoutError) as exc:
            raise errors.InitializationFailed(f"cannot connect to {address}: {exc!r}") from exc
        return pipe


@hookimpl
def stoffelnet_register_transports(register: Callable[[type[Transport]], None]) -> None:
    register(UnixTransport)
