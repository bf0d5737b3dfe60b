"""Real, if tiny, third-party transport distributions written into a folder that goes on ``sys.path``.

`make_distribution` writes a package and its ``*.dist-info`` folder (METADATA, entry_points.txt) the way an
installer lays them out, so `importlib.metadata` finds the plugin exactly as it finds an installed one: with its
distribution name and version. Nothing is installed and nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import re
import textwrap
from pathlib import Path

from stoffelnet_core.plugins import ENTRY_POINT_GROUP

__all__ = ["BAD_SOURCE", "FOO_SOURCE", "make_distribution", "module_name", "transport_entry_points"]

FOO_SOURCE = textwrap.dedent(
    '''
    """stoffelnet-foo: a stub third-party transport, enough to be listed and selected (it moves no bytes)."""

    from __future__ import annotations

    from collections.abc import Callable

    from stoffelnet_core import errors
    from stoffelnet_core.hookspecs import hookimpl
    from stoffelnet_core.ids import Address, ClientType
    from stoffelnet_core.transport import BytePipe, Listener, Transport

    PLUGIN_API_VERSION = 1


    class FooTransport(Transport):
        name = "foo"

        async def listen(self, address: Address, on_pipe: Callable[[BytePipe], None]) -> Listener:
            raise errors.InitializationFailed("the foo transport is a stub")

        async def dial(self, address: Address, *, role: ClientType) -> BytePipe:
            raise errors.InitializationFailed("the foo transport is a stub")


    @hookimpl
    def stoffelnet_register_transports(register: Callable[[type[Transport]], None]) -> None:
        register(FooTransport)
    '''
)
"""Module source of a minimal third-party transport named "foo"."""

BAD_SOURCE = 'raise ImportError("stoffelnet-bad needs libbad, which is not installed")\n'
"""Module source of a plugin that cannot be imported."""


def module_name(name: str) -> str:
    """The module a distribution for transport `name` ships: ``stoffelnet_<name>``."""
    return "stoffelnet_" + re.sub(r"[^a-z0-9_]", "_", name)


def make_distribution(root: Path, name: str, source: str, *, version: str = "0.1.0") -> Path:
    """Write distribution ``stoffelnet-<name>`` into `root` and return its ``.dist-info`` folder.

    The distribution ships the package ``stoffelnet_<name>`` (`source` is its ``__init__.py``) and declares the
    entry point ``<name> = stoffelnet_<name>`` in the group ``stoffelnet.transports``. Put `root` on
    ``sys.path`` (or ``PYTHONPATH``) to "install" it.
    """
    module = module_name(name)
    package = root / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source, encoding="utf-8")
    dist_info = root / f"{module}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: stoffelnet-{name}\nVersion: {version}\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {module}\n", encoding="utf-8")
    (dist_info / "top_level.txt").write_text(f"{module}\n", encoding="utf-8")
    return dist_info


def transport_entry_points(root: Path) -> list[importlib.metadata.EntryPoint]:
    """The ``stoffelnet.transports`` entry points of the distributions in `root` only, with their `dist` set."""
    return [
        entry_point
        for dist in importlib.metadata.distributions(path=[str(root)])
        for entry_point in dist.entry_points
        if entry_point.group == ENTRY_POINT_GROUP
    ]
