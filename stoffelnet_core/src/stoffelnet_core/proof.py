"""The message a dialer signs to prove its key, for transports whose TLS does not authenticate dialers. No I/O.

It binds the proof to this one connection: the acceptor's fresh nonce and the acceptor's key, proven by the
transport's TLS, so a proof cannot be replayed elsewhere or relayed through a man in the middle (who would have
to present a key of its own, which the dialer's pin check refuses).
"""

from __future__ import annotations

__all__ = ["proof_message"]


def proof_message(
    acceptor_nonce: bytes, acceptor_fingerprint: str, role: str, claimed: int, dialer_nonce: bytes
) -> bytes:
    """What a dialer signs, and the acceptor rebuilds to check the signature."""
    if not acceptor_nonce:
        raise ValueError("a proof needs the acceptor's nonce")
    return b"\0".join(
        [
            b"stoffelnet proof v1",
            acceptor_nonce,
            acceptor_fingerprint.encode(),
            role.encode(),
            b"%d" % claimed,
            dialer_nonce,
        ]
    )
