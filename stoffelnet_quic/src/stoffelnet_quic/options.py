"""`[transport_options.quic]`: QUIC settings, with defaults safe on real 1500-byte-MTU networks.

For loopback or jumbo-frame LANs, ``max_datagram_size = 16384`` (aioquic's ceiling: it writes frame lengths in two
bytes) moves several times more data per packet; keep the default on the Internet, where larger datagrams are lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from stoffelnet_core import errors

__all__ = ["QuicOptions"]

_CONGESTION = ("reno", "cubic")
_MAX_DATAGRAM = 16384


@attrs.frozen
class QuicOptions:
    idle_timeout_ms: int = 300_000  # the seed's value; QUIC closes a connection silent for this long
    keepalive_interval_ms: int = (
        5_000  # a PING this often keeps NATs open and finds a silent peer (seed: idle/6, <=5 s)
    )
    max_datagram_size: int = 1200  # fits every path MTU QUIC supports (RFC 9000 §14)
    congestion_control: str = "reno"
    max_data: int = 16 * 1024 * 1024  # connection-level flow-control window
    max_stream_data: int = 4 * 1024 * 1024  # per QUIC stream; core's own per-stream credit sits inside it

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> QuicOptions:
        known = {f.name for f in attrs.fields(cls)}
        for key, value in options.items():
            where = f"transport_options.quic.{key}"
            if key not in known:
                raise errors.ConfigError(f"unknown key {where}; known keys: {', '.join(sorted(known))}", key=where)
            if key == "congestion_control":
                if value not in _CONGESTION:
                    raise errors.ConfigError(
                        f"{where} must be one of {_CONGESTION}, got {value!r}", key=where, value=value
                    )
            elif type(value) is not int or value <= 0:
                raise errors.ConfigError(f"{where} must be a positive integer, got {value!r}", key=where, value=value)
        result = cls(**dict(options))
        if not 1200 <= result.max_datagram_size <= _MAX_DATAGRAM:
            size = result.max_datagram_size
            raise errors.ConfigError(
                f"transport_options.quic.max_datagram_size must be in 1200..{_MAX_DATAGRAM}, got {size}",
                key="transport_options.quic.max_datagram_size",
                value=result.max_datagram_size,
            )
        return result
