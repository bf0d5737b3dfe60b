"""stoffelnet-quic: QUIC on aioquic, with both sides' keys proven before anything is delivered."""

from .options import QuicOptions
from .transport import QuicTransport

__all__ = ["QuicOptions", "QuicTransport", "__version__"]
__version__ = "0.1.0"
