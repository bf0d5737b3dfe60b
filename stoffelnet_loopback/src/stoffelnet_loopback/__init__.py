"""stoffelnet-loopback: whole stoffelnet networks inside one process, over in-memory byte pipes."""

from .transport import LoopbackPipe, LoopbackTransport

__all__ = ["LoopbackPipe", "LoopbackTransport", "__version__"]
__version__ = "0.1.0"
