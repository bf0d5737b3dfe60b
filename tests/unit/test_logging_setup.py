"""Structured logging for programs (`stoffelnet_core.logs.configure_logging`), and no print in library code.

Every record names the member (``party0``, ``client1``); JSON lines carry ts, level, logger, member, message and,
with an exception, exc. Only the command-line modules may print.
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stoffelnet_core import errors
from stoffelnet_core.logs import configure_logging, remove_logging

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("stoffelnet_core", "stoffelnet_tcp_tls", "stoffelnet_quic", "stoffelnet_loopback")
COMMAND_MODULES = {"cli.py", "runner.py", "__main__.py"}  # programs: they print their results


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Where the configured handler writes; the test must leave logging as it found it (checked here).

    `configure_logging` sets the root logger's other handlers aside until `remove_logging`; pytest swaps its own
    handlers between setup, call and teardown, so each test removes what it configured before it ends.
    """
    root = logging.getLogger()
    saved_level = root.level
    out = io.StringIO()
    try:
        yield out
    finally:
        remove_logging()
        root.setLevel(saved_level)


@contextlib.contextmanager
def restored() -> Iterator[None]:
    """Check that the root logger's handlers are back as they were once `remove_logging` ran."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        yield
    finally:
        remove_logging()
    assert list(root.handlers) == before


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_json_lines_carry_the_member_and_the_required_keys(stream: io.StringIO) -> None:
    with restored():
        configure_logging("INFO", json_lines=True, member="party0", stream=stream)
        logging.getLogger("stoffelnet.network").info("party %d listening on %s", 0, "10.0.0.1:9000")
        logging.getLogger("stoffelnet.peer").debug("not at INFO")
        [line] = lines(stream)
        entry = json.loads(line)
        assert set(entry) == {"ts", "level", "logger", "member", "message"}
        assert entry["level"] == "INFO"
        assert entry["logger"] == "stoffelnet.network"
        assert entry["member"] == "party0"
        assert entry["message"] == "party 0 listening on 10.0.0.1:9000"
        moment = datetime.datetime.fromisoformat(entry["ts"])
        assert moment.utcoffset() == datetime.timedelta(0)  # UTC
        assert abs((datetime.datetime.now(datetime.UTC) - moment).total_seconds()) < 60


def test_an_exception_is_in_exc(stream: io.StringIO) -> None:
    with restored():
        configure_logging("WARNING", json_lines=True, member="client1", stream=stream)
        try:
            raise errors.ConnectionLost("connection to party 2 lost", peer=2)
        except errors.ConnectionLost:
            logging.getLogger("stoffelnet.network").exception("receive failed")
        entry = json.loads(lines(stream)[0])
        assert entry["member"] == "client1"
        assert entry["message"] == "receive failed"
        assert "Traceback" in entry["exc"]
        assert "ConnectionLost: connection to party 2 lost" in entry["exc"]


def test_text_lines_name_the_member_and_every_logger_is_tagged(stream: io.StringIO) -> None:
    with restored():
        configure_logging("warning", json_lines=False, member="party2", stream=stream)  # level names in any case
        logging.getLogger("stoffelnet.tcp_tls").warning("refused a connection")
        logging.getLogger("asyncio").error("not a stoffelnet logger")  # the filter is on the handler: all are tagged
        first, second = lines(stream)
        assert "party2" in first
        assert first.endswith("WARNING stoffelnet.tcp_tls: refused a connection")
        assert "party2" in second
        assert second.endswith("ERROR asyncio: not a stoffelnet logger")


def test_configuring_again_replaces_and_remove_takes_it_away(stream: io.StringIO) -> None:
    with restored():
        other = io.StringIO()
        configure_logging("INFO", json_lines=True, member="party0", stream=other)
        configure_logging("INFO", json_lines=True, member="party1", stream=stream)
        logging.getLogger("stoffelnet.x").warning("once")
        assert other.getvalue() == ""  # the first handler is gone: no line is written twice
        assert [json.loads(line)["member"] for line in lines(stream)] == ["party1"]
        remove_logging()
        logging.getLogger("stoffelnet.x").warning("after remove")
        assert len(lines(stream)) == 1
        remove_logging()  # idempotent


def test_an_unknown_level_is_a_config_error(stream: io.StringIO) -> None:
    with restored():
        with pytest.raises(errors.ConfigError, match="VERBOSE"):
            configure_logging("VERBOSE", json_lines=False, member="party0", stream=stream)


def _prints(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]


def test_library_code_never_prints() -> None:
    found = []
    for library in LIBRARIES:
        for path in sorted((ROOT / library / "src").rglob("*.py")):
            if path.name in COMMAND_MODULES:
                continue
            found += [f"{path.relative_to(ROOT)}:{line}" for line in _prints(path)]
    assert found == [], "library code logs instead of printing; print() found at " + ", ".join(found)
