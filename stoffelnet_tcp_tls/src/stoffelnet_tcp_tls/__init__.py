"""stoffelnet-tcp-tls: mutual TLS 1.3 over TCP, peers verified by pinned certificates."""

from .options import TcpTlsOptions
from .transport import TcpTlsTransport

__all__ = ["TcpTlsOptions", "TcpTlsTransport", "__version__"]
__version__ = "0.1.0"
