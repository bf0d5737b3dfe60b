"""Which event loop a stoffelnet process runs on: asyncio's own, or uvloop where it is not slower.

uvloop is an optional extra (``pip install stoffelnet-core[uvloop]``), chosen by ``event_loop = "uvloop"`` in the
config or ``--loop uvloop`` on the command line. It is not faster for everything: aioquic measured 0.83-0.89x of
its asyncio speed on it, and uvloop 0.23 does not complete the server side of ``start_tls`` that tcp-tls's
listener uses. So a transport opts in (`Transport.uvloop`); asked for uvloop, one that did not stays on asyncio,
and the log says why. An application that runs its own loop chooses it itself (``uvloop.run(main())``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable

from . import errors
from .config import EVENT_LOOPS

__all__ = ["LoopFactory", "loop_factory"]

log = logging.getLogger("stoffelnet.loops")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(name: str, transport: str | None = None) -> LoopFactory | None:
    """The factory for the `name`d loop (None: asyncio's default), for a process that uses `transport`.

    Raises `ConfigError` for an unknown name, or for uvloop when it is not installed.
    """
    if name not in EVENT_LOOPS:
        raise errors.ConfigError(
            f"event_loop must be one of {', '.join(map(repr, EVENT_LOOPS))}, got {name!r}", key="event_loop", value=name
        )
    if name == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        raise errors.ConfigError(
            "event_loop 'uvloop' needs uvloop: pip install 'stoffelnet-core[uvloop]'", key="event_loop", value=name
        ) from None
    if transport is not None:
        from .plugins import default_plugins

        cls = default_plugins().get(transport)
        if not cls.uvloop:
            log.warning(
                "event_loop 'uvloop': transport %r is not faster on uvloop; it runs on asyncio's loop", transport
            )
            return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory
