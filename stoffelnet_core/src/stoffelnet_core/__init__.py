"""stoffelnet: secure, fast networking for multi-party computation.

Parties (and their clients) exchange ordered, authenticated messages over a pluggable transport::

    import stoffelnet_core as sn

    config = sn.load_config("party0.toml")
    async with sn.open_network(config) as net:
        await net.broadcast(b"hello")
        sender, data = await net.receive()
"""

from . import errors
from .config import ClientsConfig, Config, TLSConfig, load_config
from .errors import StoffelnetError
from .frames import PROTOCOL_VERSION, Tag
from .hookspecs import hookimpl
from .ids import Address, ClientId, ClientType, Node, PartyId, parse_address
from .network import Client, Network, NetworkManager, NetworkStats, PeerStats, open_client, open_network
from .peer import ConnectionState, PeerConnection
from .transport import (
    PLUGIN_API_VERSION,
    BytePipe,
    LinkInfo,
    Listener,
    PipeReceiver,
    Transport,
    TransportContext,
)

__version__ = "0.1.0"

__all__ = [
    "PLUGIN_API_VERSION",
    "PROTOCOL_VERSION",
    "Address",
    "BytePipe",
    "Client",
    "ClientId",
    "ClientType",
    "ClientsConfig",
    "Config",
    "ConnectionState",
    "LinkInfo",
    "Listener",
    "Network",
    "NetworkManager",
    "NetworkStats",
    "Node",
    "PartyId",
    "PeerConnection",
    "PeerStats",
    "PipeReceiver",
    "StoffelnetError",
    "TLSConfig",
    "Tag",
    "Transport",
    "TransportContext",
    "__version__",
    "errors",
    "hookimpl",
    "load_config",
    "open_client",
    "open_network",
    "parse_address",
]
