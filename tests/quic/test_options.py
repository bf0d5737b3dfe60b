"""QUIC options: validation, and keep-alives that hold an idle connection open past the idle timeout."""

from __future__ import annotations

import asyncio

import pytest

from stoffelnet_core import errors
from stoffelnet_core.testing import local_network
from stoffelnet_quic import QuicOptions


def test_defaults_are_mtu_safe() -> None:
    options = QuicOptions.from_mapping({})
    assert options.datagram_size_for("192.0.2.7") == 1200  # any real network
    assert options.datagram_size_for("example.org") == 1200
    assert options.datagram_size_for("127.0.0.1") == 16384  # loopback: MTU 64 KiB
    assert options.datagram_size_for("::1") == 16384
    assert QuicOptions.from_mapping({"max_datagram_size": 1300}).datagram_size_for("127.0.0.1") == 1300
    assert options.keepalive_interval_ms <= options.idle_timeout_ms // 2


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"idle_timout_ms": 5}, "unknown key transport_options.quic.idle_timout_ms"),
        ({"max_datagram_size": 20000}, "max_datagram_size must be in 1200..16384"),
        ({"max_datagram_size": 1000}, "max_datagram_size must be in 1200..16384"),
        ({"congestion_control": "bbr"}, "congestion_control must be one of"),
        ({"idle_timeout_ms": -1}, "idle_timeout_ms must be a positive integer"),
        ({"max_data": "lots"}, "max_data must be a positive integer"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], match: str) -> None:
    with pytest.raises(errors.ConfigError, match=match):
        QuicOptions.from_mapping(options)


async def test_keepalives_hold_an_idle_connection_open_past_the_idle_timeout() -> None:
    quic = {"idle_timeout_ms": 400, "keepalive_interval_ms": 100, "max_datagram_size": 16384}
    async with local_network(2, transport="quic", transport_options={"quic": quic}) as lan:
        await asyncio.sleep(1.2)  # time passing is the point here: three idle timeouts with nothing sent
        await lan[0].send(1, b"still here")
        assert await lan[1].receive_from(0, timeout=5) == b"still here"


def test_booleans_take_true_or_false() -> None:
    assert QuicOptions.from_mapping({"address_validation": False}).address_validation is False
    with pytest.raises(errors.ConfigError, match="address_validation must be true or false"):
        QuicOptions.from_mapping({"address_validation": 1})
