"""QUIC options: validation, the engine choice, and keep-alives that hold an idle connection open past the idle
timeout."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from stoffelnet_core import errors
from stoffelnet_core.testing import local_network
from stoffelnet_core.transport import Credentials, TransportContext
from stoffelnet_quic import QuicOptions, QuicTransport
from stoffelnet_quic.engines import load_engine


def test_defaults_are_mtu_safe() -> None:
    options = QuicOptions.from_mapping({})
    assert (options.engine, options.send_buffer_bytes) == ("aioquic", 1024 * 1024)
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
        ({"engine": "quiche"}, r"transport_options.quic.engine must be one of \('aioquic', 'qh3'\), got 'quiche'"),
        ({"engine": 3}, "transport_options.quic.engine must be a string"),
        ({"engine": "qh3", "congestion_control": "reno"}, "congestion_control cannot be set with engine 'qh3'"),
        ({"send_buffer_bytes": 1000}, "transport_options.quic.send_buffer_bytes must be at least 16384, got 1000"),
        ({"send_buffer_bytes": 0}, "transport_options.quic.send_buffer_bytes must be a positive integer"),
        ({"ack_delay_ms": 25}, "transport_options.quic.ack_delay_ms must be in 1..20, got 25"),
        ({"ack_delay_ms": 0}, "transport_options.quic.ack_delay_ms must be a positive integer"),
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


@pytest.fixture
def no_qh3(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as it is where ``stoffelnet-quic[qh3]`` was not installed: importing qh3 fails."""
    load_engine.cache_clear()
    for name in [m for m in sys.modules if m == "qh3" or m.startswith("qh3.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "qh3", None)  # `import qh3` now raises ImportError
    yield
    load_engine.cache_clear()


@pytest.mark.usefixtures("no_qh3")
def test_engine_qh3_without_qh3_installed_names_the_key_and_the_extra() -> None:
    QuicOptions.from_mapping({"engine": "qh3"})  # the value is valid: whether qh3 is installed is checked on use
    context = TransportContext(options={"engine": "qh3"}, credentials=Credentials("unused.pem", "unused.key"))
    with pytest.raises(errors.ConfigError, match=r"pip install 'stoffelnet-quic\[qh3\]'") as info:
        QuicTransport(context)
    assert info.value.key == "transport_options.quic.engine"
