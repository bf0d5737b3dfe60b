"""Fixtures every suite here may use."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from stoffelnet_core.testing.hostile import LogWatch


@pytest.fixture
def logwatch(caplog: pytest.LogCaptureFixture) -> Iterator[LogWatch]:
    """Captures `stoffelnet.*` warnings (in `caplog` too, at WARNING) and lets a test await a given refusal."""
    caplog.set_level(logging.WARNING)
    with LogWatch().attached() as watch:
        yield watch
