"""`[transport_options.tcp-tls]`: the few knobs of the TLS-over-TCP transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from stoffelnet_core.transport import read_options

__all__ = ["TcpTlsOptions"]


@attrs.frozen
class TcpTlsOptions:
    handshake_timeout_ms: int = 10_000  # a TLS handshake that takes longer is dropped (slow or silent peers)
    # Connections still in their TLS handshake; at this many, a new one drops the oldest (a slow-loris cannot
    # lock honest peers out: their handshakes take milliseconds, so they are never the oldest).
    max_pending_handshakes: int = 256

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> TcpTlsOptions:
        return read_options(cls, "tcp-tls", options)
