"""Entry point of the quic transport (group ``stoffelnet.transports``)."""

from __future__ import annotations

from collections.abc import Callable

from stoffelnet_core.hookspecs import hookimpl
from stoffelnet_core.transport import PLUGIN_API_VERSION, Transport

from .transport import QuicTransport

__all__ = ["PLUGIN_API_VERSION", "stoffelnet_register_transports"]


@hookimpl
def stoffelnet_register_transports(register: Callable[[type[Transport]], None]) -> None:
    register(QuicTransport)
