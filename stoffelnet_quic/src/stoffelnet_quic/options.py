"""`[transport_options.quic]`: QUIC settings, with defaults safe on real 1500-byte-MTU networks.

For loopback or jumbo-frame LANs, ``max_datagram_size = 16384`` (aioquic's ceiling: it writes frame lengths in two
bytes) moves several times more data per packet; keep the default on the Internet, where larger datagrams are lost.

``engine`` picks the QUIC implementation: ``"aioquic"`` (the default, pure Python with C helpers) or ``"qh3"``
(a maintained aioquic fork with a compiled core; install ``stoffelnet-quic[qh3]``). Both give the same guarantees and
interoperate: parties of one network may run different engines. qh3 has its own congestion controller, so
``congestion_control`` is refused with it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

from stoffelnet_core import errors
from stoffelnet_core.transport import read_options

from .engines import ENGINES

__all__ = ["QuicOptions"]

_CONGESTION = ("reno", "cubic")
_MAX_DATAGRAM = 16384
_MIN_SEND_BUFFER = 16384
_MAX_ACK_DELAY_MS = 20  # under the 25 ms max_ack_delay that aioquic announces


@attrs.frozen
class QuicOptions:
    # or "qh3" (stoffelnet-quic[qh3]): the same behaviour on a compiled core; measured 1.6x aioquic's 1 KiB
    # messages/s, 2.4-2.9x its MiB/s and 0.6x its round trip (stoffelnet bench --quick, rows quic[qh3])
    engine: str = "aioquic"
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
    max_pending_handshakes: int = 256  # connections still handshaking; at this many, a new one drops the oldest
    # Answer a new Initial with a Retry first (RFC 9000 §8.1): a flood of Initials that never answers creates no
    # connection state at all. Costs one round trip per connection set-up.
    address_validation: bool = True
    # Bytes written to the connection's QUIC streams and not yet sent (the engines never refuse a write): above this,
    # core stops handing the stream data (and `send` soon waits) until it is back under half. A peer that stops
    # acknowledging (stopped, or a congested path) thus holds at most this much unsent, plus what is in flight
    # (bounded by the peer's flow-control window, max_stream_data).
    send_buffer_bytes: int = 1024 * 1024
    # How long an acknowledgement waits while traffic is sparse (fewer than two full-sized datagrams since the last
    # one), instead of the engine's 1 ms: a ping-pong or rounds of small messages are then acknowledged about once
    # per delay, mostly within a data packet, instead of every millisecond by an ACK-only packet, which costs both
    # ends a whole engine pass. Bulk traffic is acknowledged at the engine's own pace. At most 20 (aioquic tells
    # peers it takes up to 25 ms, and they wait that long plus a round trip before they probe). 1: the engine's own
    # pace always. aioquic only (qh3 acknowledges as it sees fit).
    ack_delay_ms: int = 5

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> QuicOptions:
        result = read_options(cls, "quic", options)
        if result.engine not in ENGINES:
            raise errors.ConfigError(
                f"transport_options.quic.engine must be one of {ENGINES}, got {result.engine!r}",
                key="transport_options.quic.engine",
                value=result.engine,
            )
        if result.engine == "qh3" and "congestion_control" in options:
            raise errors.ConfigError(
                "transport_options.quic.congestion_control cannot be set with engine 'qh3' (its compiled core has "
                "its own congestion controller); remove the key or use engine 'aioquic'",
                key="transport_options.quic.congestion_control",
                value=result.congestion_control,
            )
        if result.send_buffer_bytes < _MIN_SEND_BUFFER:
            raise errors.ConfigError(
                f"transport_options.quic.send_buffer_bytes must be at least {_MIN_SEND_BUFFER}, "
                f"got {result.send_buffer_bytes}",
                key="transport_options.quic.send_buffer_bytes",
                value=result.send_buffer_bytes,
            )
        if result.ack_delay_ms > _MAX_ACK_DELAY_MS:
            raise errors.ConfigError(
                f"transport_options.quic.ack_delay_ms must be in 1..{_MAX_ACK_DELAY_MS}, got {result.ack_delay_ms}",
                key="transport_options.quic.ack_delay_ms",
                value=result.ack_delay_ms,
            )
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
