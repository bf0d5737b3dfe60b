"""stoffelnet's pytest plugin (entry point ``pytest11: stoffelnet``): choose a transport for tests.

It adds the option ``--stoffelnet-transport=<name>`` (or the ini key ``stoffelnet_transport``; default
``"loopback"``) and plain, synchronous fixtures, so it works in pytest-asyncio's strict mode and needs no
event loop of its own. There are no autouse fixtures: installing stoffelnet changes no one's test run.

- ``stoffelnet_transport``: the transport name.
- ``stoffelnet_network_options``: config overrides for `local_network` (``{}``; override it in a conftest).
- ``stoffelnet_local_network``: `local_network` with the two above bound in::

      @pytest.mark.asyncio
      async def test_my_protocol(stoffelnet_local_network):
          async with stoffelnet_local_network(3, clients=1) as lan:
              await lan[0].send(1, b"share")
              assert await lan[1].receive_from(0) == b"share"

- ``stoffelnet_chaos_seed``: a seed for the fault-injecting proxies of `stoffelnet_core.testing.chaos`: fresh
  each run, or ``STOFFELNET_CHAOS_SEED`` when set, and shown in a failing test's report so the run replays.

The conformance suite for transport authors runs with
``pytest --pyargs stoffelnet_core.testing.conformance --stoffelnet-transport=<name>``.

Only pytest is imported here; stoffelnet itself is imported when a fixture is used.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from stoffelnet_core.testing import LocalNetwork

DEFAULT_TRANSPORT = "loopback"
CHAOS_SEED_VARIABLE = "STOFFELNET_CHAOS_SEED"
_OPTION = "--stoffelnet-transport"
_INI = "stoffelnet_transport"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stoffelnet", "stoffelnet networking")
    group.addoption(
        _OPTION,
        dest="stoffelnet_transport",
        metavar="NAME",
        default=None,
        help=f"transport for stoffelnet tests and the conformance suite (default: ini {_INI}, else loopback)",
    )
    parser.addini(_INI, help=f"default for {_OPTION}", default=DEFAULT_TRANSPORT)


def _transport(config: pytest.Config) -> str:
    name = config.getoption("stoffelnet_transport") or config.getini(_INI) or DEFAULT_TRANSPORT
    return str(name)


def pytest_report_header(config: pytest.Config) -> str:
    return f"stoffelnet transport: {_transport(config)}"


@pytest.fixture
def stoffelnet_transport(request: pytest.FixtureRequest) -> str:
    """The transport chosen with ``--stoffelnet-transport`` (or the ini key); ``"loopback"`` by default."""
    return _transport(request.config)


@pytest.fixture
def stoffelnet_network_options() -> dict[str, Any]:
    """Config overrides `stoffelnet_local_network` passes to every network (e.g. ``{"timeout_ms": 5000}``).

    Empty by default; override this fixture in a conftest to change it for a directory of tests.
    """
    return {}


@pytest.fixture
def stoffelnet_local_network(
    stoffelnet_transport: str, stoffelnet_network_options: dict[str, Any]
) -> Callable[..., AbstractAsyncContextManager[LocalNetwork]]:
    """`stoffelnet_core.testing.local_network` with the chosen transport and options bound.

    Call it as ``local_network(n, clients=0, **overrides)`` inside ``async with`` in the test; keyword
    arguments given there win over `stoffelnet_network_options`.
    """
    from stoffelnet_core.testing import local_network

    return functools.partial(local_network, transport=stoffelnet_transport, **stoffelnet_network_options)


@pytest.fixture
def stoffelnet_chaos_seed(request: pytest.FixtureRequest) -> int:
    """A seed for `stoffelnet_core.testing.chaos` proxies: ``STOFFELNET_CHAOS_SEED`` when set (to replay a
    failure), else a fresh one, so every run tries other faults. A failing test's report shows it."""
    text = os.environ.get(CHAOS_SEED_VARIABLE, "").strip()
    try:
        seed = int(text, 0) if text else secrets.randbits(32)
    except ValueError:
        raise pytest.UsageError(f"{CHAOS_SEED_VARIABLE} must be an integer, got {text!r}") from None
    request.node.user_properties.append(("stoffelnet_chaos_seed", seed))
    if isinstance(request.node, pytest.Item):
        request.node.add_report_section(
            "setup", "stoffelnet chaos seed", f"{seed} (replay with {CHAOS_SEED_VARIABLE}={seed})"
        )
    return seed
