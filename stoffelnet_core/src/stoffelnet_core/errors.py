"""The one error hierarchy of stoffelnet.

Every error the library raises derives from `StoffelnetError`. As in h11, errors are either *local* (the caller
misused the API: `InvalidState`, `ConfigError`) or *remote* (a peer broke the protocol: `FramingError`,
`AuthenticationError`). Native errors (`OSError`, `ssl.SSLError`, cbor2's) are translated at the boundary with
``raise ... from exc``. No I/O here.

`ConnectionError` shadows the builtin on purpose (the seed's name): inside the library import this module and write
``errors.ConnectionError``.
"""

from __future__ import annotations

import builtins
from typing import Any, Self

__all__ = [
    "AuthenticationError",
    "ClientNotFound",
    "ComputationError",
    "ConfigError",
    "ConnectionError",
    "ConnectionLost",
    "FramingError",
    "InitializationFailed",
    "InvalidArgument",
    "InvalidState",
    "NetworkError",
    "PartyNotFound",
    "PeerRestarted",
    "PluginError",
    "ReceiveFailed",
    "SendError",
    "SendFailed",
    "StoffelnetError",
    "StreamClosed",
    "Timeout",
]


class StoffelnetError(Exception):
    """Root of every error stoffelnet raises."""

    def because(self, cause: BaseException) -> Self:
        """This error, caused by `cause`: ``raise error.because(exc)`` is ``raise error from exc``, spelled so that
        the modules compiled by mypyc keep the cause (mypyc drops a ``from`` clause)."""
        self.__cause__ = cause
        return self


# -- network level (the seed's NetworkError) ----------------------------------------------------------------------
class NetworkError(StoffelnetError):
    """A network-level operation (send, receive, lookup) failed."""


class InvalidArgument(NetworkError, ValueError):
    """A local misuse: a bad stream id, tag or payload was passed; nothing was sent or taken."""


class SendError(NetworkError):
    """A message could not be accepted for sending."""


class Timeout(NetworkError, builtins.TimeoutError):
    """A bounded wait ran out; also a builtin `TimeoutError` so generic handlers catch it."""

    def __init__(self, message: str, *, timeout: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout


class PartyNotFound(NetworkError, LookupError):
    """The party id is not part of this network."""

    def __init__(self, party: int, message: str | None = None) -> None:
        super().__init__(message or f"party {party!r} is not in the network")
        self.party = party


class ClientNotFound(NetworkError, LookupError):
    """The client id is not connected."""

    def __init__(self, client: int, message: str | None = None) -> None:
        super().__init__(message or f"client {client!r} is not connected")
        self.client = client


# -- connection level (the seed's ConnectionError kinds) ----------------------------------------------------------
class ConnectionError(StoffelnetError):
    """A single peer connection failed; `peer` names the party or client when known."""

    def __init__(self, message: str, *, peer: Any = None) -> None:
        super().__init__(message)
        self.peer = peer


class StreamClosed(ConnectionError):
    """The peer closed the stream or connection gracefully; nothing more will arrive."""


class ConnectionLost(ConnectionError):
    """The connection to a peer was lost unexpectedly (or the peer is gone for good)."""


class PeerRestarted(ConnectionLost):
    """The party came back as a new process (a new session id): what it had sent or was owed is gone.

    Its new connection is refused and this error is raised to every waiter on it, so messages of the old and the
    new process are never mixed; the application decides what a restart means for its computation.
    """


class SendFailed(ConnectionError):
    """Bytes could not be written to the connection."""


class ReceiveFailed(ConnectionError):
    """Bytes could not be read from the connection."""


class FramingError(ConnectionError):
    """A remote protocol fault: a frame was oversized, truncated, malformed, or out of place.

    The connection that carried it is closed; every other connection is unaffected.
    """


class InitializationFailed(ConnectionError):
    """A connection or network could not be set up (dial, listen, handshake)."""


class InvalidState(ConnectionError):
    """A local misuse: the operation is illegal in the connection's current state."""

    def __init__(self, message: str, *, state: Any = None, peer: Any = None) -> None:
        super().__init__(message, peer=peer)
        self.state = state


# -- identity, configuration, plugins ------------------------------------------------------------------------------
class AuthenticationError(StoffelnetError):
    """A peer failed to prove the identity it claimed (or we failed to prove ours); nothing it sent is delivered."""

    def __init__(self, message: str, *, peer: Any = None) -> None:
        super().__init__(message)
        self.peer = peer


class ConfigError(StoffelnetError, ValueError):
    """A configuration key has a bad value; `key` and `value` name it."""

    def __init__(self, message: str, *, key: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class PluginError(StoffelnetError):
    """A transport plugin is missing, broken, or incompatible."""


# -- computation ---------------------------------------------------------------------------------------------------
class ComputationError(StoffelnetError):
    """An MPC computation (`stoffelnet_core.computation`) got values it cannot use: a share that is not a field
    element, or result shares that do not lie on one polynomial of the agreed degree.

    `member` names the party or client at fault (``"party 2"``) when it can be told, else None.
    """

    def __init__(self, message: str, *, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member
