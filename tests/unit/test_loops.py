"""The event-loop choice: asyncio by default, uvloop only for a transport that is not slower on it."""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path
from types import ModuleType

import pytest
import uvloop

from stoffelnet_core import cli, errors
from stoffelnet_core.config import Config, dump_config, load_config
from stoffelnet_core.ids import Address, Node, PartyId
from stoffelnet_core.loops import loop_factory
from stoffelnet_core.testing import local_network

PARTIES = (Node(PartyId(0), Address("127.0.0.1", 9000)),)


def test_asyncio_is_the_default_and_needs_no_factory() -> None:
    assert Config(party_id=0, parties=PARTIES).event_loop == "asyncio"
    assert loop_factory("asyncio", "quic") is None


def test_an_unknown_loop_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(errors.ConfigError, match="event_loop must be one of 'asyncio', 'uvloop', got 'trio'") as info:
        loop_factory("trio")
    assert info.value.key == "event_loop"
    with pytest.raises(errors.ConfigError, match="event_loop must be one of") as info:
        Config(event_loop="trio")
    assert info.value.key == "event_loop"


def test_uvloop_for_a_transport_that_opted_in() -> None:
    assert loop_factory("uvloop", "loopback") is uvloop.new_event_loop


@pytest.mark.parametrize("transport", ["quic", "tcp-tls"])
def test_uvloop_is_refused_for_a_transport_it_would_slow_down(transport: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stoffelnet.loops"):
        assert loop_factory("uvloop", transport) is None
    assert f"transport {transport!r} is not faster on uvloop" in caplog.text


def test_uvloop_missing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_uvloop(name: str, package: str | None = None) -> ModuleType:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_uvloop)
    with pytest.raises(errors.ConfigError, match=r"pip install 'stoffelnet-core\[uvloop\]'"):
        loop_factory("uvloop", "loopback")


def test_event_loop_round_trips_through_a_config_file(tmp_path: Path) -> None:
    config = Config(party_id=0, parties=PARTIES, event_loop="uvloop")
    path = tmp_path / "party0.toml"
    path.write_text(dump_config(config), encoding="utf-8")
    assert 'event_loop = "uvloop"' in path.read_text(encoding="utf-8")
    assert load_config(path) == config
    assert "event_loop" not in dump_config(Config(party_id=0, parties=PARTIES))  # the default is not written


def test_a_network_runs_on_uvloop() -> None:
    async def exchange() -> tuple[str, bytes]:
        async with local_network(3) as lan:
            await lan[0].broadcast(b"on uvloop")
            got = [await net.receive_from(0, timeout=5) for net in lan]
            assert set(got) == {b"on uvloop"}
            return type(asyncio.get_running_loop()).__module__, got[0]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        module, got = runner.run(exchange())
    assert module.startswith("uvloop")
    assert got == b"on uvloop"


def test_the_demo_runs_on_uvloop(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--transport", "loopback", "--loop", "uvloop", "--rounds", "20", "--size", "64"]) == 0
    assert "check                 PASSED" in capsys.readouterr().out
