"""The shipped conformance suite (`stoffelnet_core.testing.conformance`) over every transport we maintain.

Transport authors run the same tests with
``pytest --pyargs stoffelnet_core.testing.conformance --stoffelnet-transport=<name>``.
"""

from __future__ import annotations

import pytest

from stoffelnet_core.testing import conformance

TRANSPORTS = [
    "loopback",
    "tcp-tls",
    "quic",
    # one line per transport
]

# Collect every conformance test here too, under this module's parametrized `stoffelnet_transport` fixture.
globals().update({name: test for name, test in vars(conformance).items() if name.startswith("test_")})


@pytest.fixture(params=TRANSPORTS)
def stoffelnet_transport(request: pytest.FixtureRequest) -> str:
    """Overrides the plugin's fixture (one value, from the command line) with every maintained transport."""
    return str(request.param)
