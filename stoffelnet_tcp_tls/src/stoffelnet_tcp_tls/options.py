"""`[transport_options.tcp-tls]`: the few knobs of the TLS-over-TCP transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from stoffelnet_core import errors

__all__ = ["TcpTlsOptions"]


@attrs.frozen
class TcpTlsOptions:
    handshake_timeout_ms: int = 10_000  # a TLS handshake that takes longer is dropped (slow or silent peers)
    max_pending_handshakes: int = 256  # connections still in their TLS handshake; more are refused at once

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> TcpTlsOptions:
        known = {f.name for f in attrs.fields(cls)}
        for key, value in options.items():
            where = f"transport_options.tcp-tls.{key}"
            if key not in known:
                raise errors.ConfigError(f"unknown key {where}; known keys: {', '.join(sorted(known))}", key=where)
            if type(value) is not int or value <= 0:
                raise errors.ConfigError(f"{where} must be a positive integer, got {value!r}", key=where, value=value)
        return cls(**dict(options))
