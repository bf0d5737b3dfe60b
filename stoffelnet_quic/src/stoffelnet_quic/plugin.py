"""Entry point of the quic transport: not implemented in this version.

Loading it fails with a clear reason, so `stoffelnet transports` lists it as broken (never as usable) and a
config selecting it gets a `PluginError` that says why.
"""

raise ImportError("stoffelnet-quic 0.1.0 is a placeholder: the quic transport is not implemented yet")
