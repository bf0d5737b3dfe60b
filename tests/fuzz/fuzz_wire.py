"""Coverage-guided fuzzing (atheris) of everything that parses bytes from a peer: the frame decoder, the
multiplexer and an open session. Anything but stoffelnet's own errors is a crash.

    python tests/fuzz/fuzz_wire.py                     # run until stopped (Ctrl-C); crashes are written as files
    python tests/fuzz/fuzz_wire.py -runs=100000        # a bounded run; tests/fuzz/test_fuzz_smoke.py runs a short one
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from stoffelnet_core import codec, errors, mux
    from stoffelnet_core.frames import Handshake
    from stoffelnet_core.ids import ClientType
    from stoffelnet_core.session import PeerIdentity, Session

_OURS = (errors.StoffelnetError,)


def _chunks(fdp: atheris.FuzzedDataProvider, data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = fdp.ConsumeIntInRange(1, 64)
        out.append(data[pos : pos + size])
        pos += size
    return out


def _open_session() -> Session:
    def verify(handshake: Handshake, proven: str | None) -> PeerIdentity:
        return PeerIdentity(ClientType.SERVER, 0)

    session = Session(role=ClientType.SERVER, local_id=1, dialer=False, verify=verify, max_frame_size=4096)
    session.receive_data(0, codec.encode(Handshake("server", 0)))
    return session


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 2)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        if target == 0:
            decoder = codec.FrameDecoder(max_frame_size=4096)
            for chunk in _chunks(atheris.FuzzedDataProvider(body[:8]), body):
                decoder.feed(chunk)
            decoder.eof()
        elif target == 1:
            mx = mux.Multiplexer(max_streams=8)
            for chunk in _chunks(atheris.FuzzedDataProvider(body[:8]), body):
                mx.receive_data(chunk)
            mx.eof()
        else:
            session = _open_session()
            channel = body[0] % 4 if body else 1
            for chunk in _chunks(atheris.FuzzedDataProvider(body[:8]), body[1:]):
                session.receive_data(channel, chunk)
            session.eof()
    except _OURS:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
