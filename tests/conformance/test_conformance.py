"""The shipped conformance suite (`stoffelnet_core.testing.conformance`) over every transport we maintain.

Transport authors run the same tests with
``pytest --pyargs stoffelnet_core.testing.conformance --stoffelnet-transport=<name>``.

A transport offered in several variants runs the whole suite once per variant: ``quic[qh3]`` is the quic transport
with ``[transport_options.quic] engine = "qh3"`` (skipped, saying so, where qh3 is not installed).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import pytest

from stoffelnet_core.testing import conformance, local_network

TRANSPORTS = [
    "loopback",
    "tcp-tls",
    "quic",
    pytest.param(
        "quic[qh3]",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("qh3") is None, reason="qh3 is not installed (pip install 'stoffelnet-quic[qh3]')"
        ),
    ),
    # one line per transport
]

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # variant -> (transport, its transport_options for every member of every network the suite starts)
    "quic[qh3]": ("quic", {"quic": {"engine": "qh3"}}),
}

# Collect every conformance test here too, under this module's parametrized `stoffelnet_transport` fixture.
globals().update({name: test for name, test in vars(conformance).items() if name.startswith("test_")})


@pytest.fixture(params=TRANSPORTS)
def stoffelnet_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Overrides the plugin's fixture (one value, from the command line) with every maintained transport; for a
    variant, the suite's networks get the variant's transport options."""
    name = str(request.param)
    if name in VARIANTS:
        name, options = VARIANTS[name]
        monkeypatch.setattr(conformance, "local_network", functools.partial(local_network, transport_options=options))
    return name
