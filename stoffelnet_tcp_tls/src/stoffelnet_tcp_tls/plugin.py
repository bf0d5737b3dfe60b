"""Entry point of the tcp-tls transport: not implemented in this version.

Loading it fails with a clear reason, so `stoffelnet transports` lists it as broken (never as usable) and a
config selecting it gets a `PluginError` that says why.
"""

raise ImportError("stoffelnet-tcp-tls 0.1.0 is a placeholder: the tcp-tls transport is not implemented yet")
