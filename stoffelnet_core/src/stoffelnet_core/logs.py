"""Log output for one member's process (`stoffelnet party`, `stoffelnet client`, the demo's workers).

Every line names the member (``party0``, ``client1``) so that the logs of many processes can be merged and still be
read. Two formats: text (``2026-01-01T12:00:00.123Z party0 INFO stoffelnet.network: message``) and JSON lines with
the keys ``ts``, ``level``, ``logger``, ``member``, ``message`` (and ``exc`` when an exception is attached)::

    with member_logging("party0", level="INFO", json_lines=True):
        ...  # every record reaching the root logger is written to stderr, tagged with the member

`configure_logging` / `remove_logging` do the same without a ``with`` block (one configuration at a time).

The library itself only logs (``logging.getLogger("stoffelnet....")``); this module is for programs.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

from . import errors

__all__ = [
    "JsonFormatter",
    "MemberFilter",
    "TextFormatter",
    "configure_logging",
    "member_logging",
    "parse_level",
    "remove_logging",
]


class MemberFilter(logging.Filter):
    """Adds ``record.member`` (the party or client this process is) to every record it sees; drops none."""

    def __init__(self, member: str) -> None:
        super().__init__()
        self.member = member

    def filter(self, record: logging.LogRecord) -> bool:
        record.member = self.member
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``<UTC time> <member> <LEVEL> <logger>: <message>``, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {getattr(record, 'member', '-')} {record.levelname} {record.name}: "
        line += record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``member``, ``message``, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "member": getattr(record, "member", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_level(level: str) -> int:
    """A level name (any case) as `logging` numbers it; `errors.ConfigError` naming the choices otherwise."""
    name = level.upper()
    if name not in _LEVELS:
        raise errors.ConfigError(
            f"log level must be one of {', '.join(_LEVELS)} (any case), got {level!r}", key="log-level", value=level
        )
    return logging.getLevelNamesMapping()[name]


def _handler(member: str, json_lines: bool, stream: TextIO | None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(MemberFilter(member))
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    return handler


@contextlib.contextmanager
def member_logging(
    member: str, *, level: str = "WARNING", json_lines: bool = False, stream: TextIO | None = None
) -> Iterator[logging.Handler]:
    """For the duration: every record reaching the root logger goes to `stream` (default stderr), tagged `member`.

    The root logger's other handlers are set aside meanwhile (so that no line is written twice) and put back, with
    the root's level, on exit.
    """
    numeric = parse_level(level)
    handler = _handler(member, json_lines, stream)
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    for other in saved_handlers:
        root.removeHandler(other)
    root.addHandler(handler)
    root.setLevel(numeric)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for other in saved_handlers:
            root.addHandler(other)
        root.setLevel(saved_level)


_configured: list[contextlib.ExitStack] = []  # what configure_logging set up, for remove_logging


def configure_logging(
    level: str = "WARNING", *, json_lines: bool = False, member: str = "-", stream: TextIO | None = None
) -> logging.Handler:
    """`member_logging` without a ``with`` block: stays until `remove_logging` (a second call replaces the first)."""
    remove_logging()
    stack = contextlib.ExitStack()
    handler = stack.enter_context(member_logging(member, level=level, json_lines=json_lines, stream=stream))
    _configured.append(stack)
    return handler


def remove_logging() -> None:
    """Undo `configure_logging` (a no-op when nothing is configured)."""
    while _configured:
        _configured.pop().close()
