"""`[transport_options.quic]`: QUIC settings, with defaults safe on real 1500-byte-MTU networks.

For loopback or jumbo-frame LANs, ``max_datagram_size = 16384`` (aioquic's ceiling: it writes frame lengths in two
bytes) moves several times more data per packet; keep the default on the Internet, where larger datagrams are lost.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

from stoffelnet_core import errors
from stoffelnet_core.transport import read_options

__all__ = ["QuicOptions"]

_CONGESTION = ("reno", "cubic")
_MAX_DATAGRAM = 16384


@attrs.frozen
class QuicOptions:
    # A peer silent this long (no packet, not even an ack of our keep-alive PINGs) is gone: its connection is lost.
    # The seed used 300 s; keep-alives make a short timeout safe, and a dead peer is then noticed in seconds.
    idle_timeout_ms: int = 30_000
    keepalive_interval_ms: int = (
        5_000  # a PING this often keeps NATs open and finds a silent peer (seed: idle/6, <=5 s)
    )
    # 0 = automatic: 1200 (fits every path MTU QUIC supports, RFC 9000 §14), or 16384 between loopback addresses
    # (their MTU is 64 KiB, so that is just as safe there, and several times faster). Set a number to force one.
    max_datagram_size: int = 0
    congestion_control: str = "reno"
    max_data: int = 16 * 1024 * 1024  # connection-level flow-control window
    max_stream_data: int = 4 * 1024 * 1024  # per QUIC stream; core's own per-stream credit sits inside it
    handshake_timeout_ms: int = 10_000  # a connection still handshaking after this is dropped (spoofed Initials)
    max_pending_handshakes: int = 256  # connections still handshaking; more are refused at once
    # Answer a new Initial with a Retry first (RFC 9000 §8.1): a flood of Initials that never answers creates no
    # connection state at all. Costs one round trip per connection set-up.
    address_validation: bool = True

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> QuicOptions:
        result = read_options(cls, "quic", options)
        if result.congestion_control not in _CONGESTION:
            raise errors.ConfigError(
                f"transport_options.quic.congestion_control must be one of {_CONGESTION}, "
                f"got {result.congestion_control!r}",
                key="transport_options.quic.congestion_control",
                value=result.congestion_control,
            )
        if result.max_datagram_size and not 1200 <= result.max_datagram_size <= _MAX_DATAGRAM:
            size = result.max_datagram_size
            raise errors.ConfigError(
                f"transport_options.quic.max_datagram_size must be in 1200..{_MAX_DATAGRAM}, got {size}",
                key="transport_options.quic.max_datagram_size",
                value=size,
            )
        return result

    def datagram_size_for(self, host: str) -> int:
        """The datagram size to use towards (or on) `host`."""
        if self.max_datagram_size:
            return self.max_datagram_size
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = host == "localhost"
        return _MAX_DATAGRAM if loopback else 1200
