"""stoffelnet-tcp-tls: placeholder distribution; the tcp-tls transport arrives with its own issue."""

__version__ = "0.1.0"
__all__ = ["__version__"]
