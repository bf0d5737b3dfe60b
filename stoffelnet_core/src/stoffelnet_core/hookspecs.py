"""The plugin hooks a transport distribution implements (pluggy).

A transport distribution registers an entry point in the group ``stoffelnet.transports`` that names a module (or
object) with two things::

    PLUGIN_API_VERSION = 1          # from stoffelnet_core.transport; checked before anything else is used

    @stoffelnet_core.hookimpl
    def stoffelnet_register_transports(register):
        register(MyTransport)      # a stoffelnet_core.transport.Transport subclass with a unique `name`

Being installed never activates a transport: only a config's ``transport = "<name>"`` does.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .transport import Transport

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec", "stoffelnet_register_transports"]

PROJECT_NAME = "stoffelnet"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def stoffelnet_register_transports(register: Callable[[type[Transport]], None]) -> None:
    """Register the transports this plugin provides by calling ``register(TransportClass)`` once for each.

    .. versionadded:: 0.1 (plugin API 1)
    """
