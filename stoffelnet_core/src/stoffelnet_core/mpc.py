"""Shamir secret sharing and BGW multiplication over a prime field: pure functions, no I/O.

The toolkit behind `stoffelnet_core.computation` (the computation `stoffelnet demo`, `party` and `client` run), small
enough to read in one sitting:

* **Field.** Integers modulo the Mersenne prime ``P = 2**61 - 1``; an element is an ``int`` in ``0..P-1`` and
  travels as 8 bytes, big-endian (`encode_element`, `decode_element`).
* **Evaluation points.** Party ``i`` (ids ``0..n-1``) holds the value of the sharing polynomial at ``x = i + 1``;
  ``x = 0`` is never a share, it is where the secret sits. Every function here takes and returns shares keyed by
  *party id*; the shift to ``x`` happens inside.
* **Threshold.** ``t = (n - 1) // 2`` (`threshold`): any ``t`` shares reveal nothing, any ``t + 1`` reconstruct, and
  ``n >= 2t + 1`` leaves room for one multiplication (a product of two degree-``t`` sharings has degree ``2t``).
  With one or two parties ``t = 0``: every share equals the secret (no privacy, but the same code path).
* **Sharing** (`share`): a random polynomial ``f`` of degree ``t`` with ``f(0) = secret``; party ``i`` gets
  ``f(i + 1)``. **Reconstruction** (`reconstruct`): Lagrange interpolation at 0 from any ``t + 1`` (or more)
  shares. `check_shares` also proves that *all* shares lie on one polynomial of degree at most ``t`` and, when
  there is redundancy to spare, names the one party whose share does not.
* **Multiplication** (BGW with degree reduction, as in Gennaro-Rabin-Rabin's simplification): each party
  multiplies its shares of ``a`` and ``b`` locally, giving a share ``d_i`` of ``a*b`` on a polynomial of degree
  ``2t``; it re-shares ``d_i`` with degree ``t`` (sub-share ``s_ij`` to party ``j``); party ``j`` combines what it
  got with the recombination vector ``lambda`` (Lagrange coefficients at 0 for all ``n`` points): its new share is
  ``sum_i lambda_i * s_ij``, a degree-``t`` share of ``sum_i lambda_i * d_i = a*b``. `bgw_multiply` runs all
  parties of that in memory: it is the reference the networked protocol follows, and what the tests check.

Security model: passive (semi-honest) adversary controlling at most ``t`` parties, private channels (the
transport's mutual TLS). `check_shares` *detects* inconsistent opened values; it does not correct them.

Bad arguments raise `errors.InvalidArgument` (a `ValueError`); bad data from a peer (`decode_element`,
`check_shares`) raises `errors.ComputationError`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

from . import errors
from .errors import ComputationError

__all__ = [
    "ELEMENT_SIZE",
    "ComputationError",
    "P",
    "bgw_multiply",
    "check_element",
    "check_shares",
    "decode_element",
    "encode_element",
    "interpolate",
    "is_consistent",
    "recombination_vector",
    "reconstruct",
    "share",
    "threshold",
]

P = 2**61 - 1
"""The field's modulus: the Mersenne prime 2**61 - 1, so that an element fits in 8 bytes."""

ELEMENT_SIZE = 8
"""Bytes per encoded field element (big-endian)."""

_SYSTEM_RANDOM = random.SystemRandom()  # os.urandom underneath: what real shares use when no rng is given


# -- checks ----------------------------------------------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # a bool is not a count or a field element


def check_element(value: object, what: str = "the value") -> int:
    """`value` when it is a field element (an ``int`` in ``0..P-1``); `errors.InvalidArgument` naming `what` else."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < P:
        return value
    raise errors.InvalidArgument(f"{what} must be a field element (an int in 0..2**61-2), got {value!r:.60}")


def _check_party(party: object) -> int:
    if isinstance(party, int) and not isinstance(party, bool) and 0 <= party < P - 1:
        return party
    raise errors.InvalidArgument(f"a party id must be an int in 0..2**61-3, got {party!r:.60}")


def _check_points(points: Mapping[int, int]) -> dict[int, int]:
    """Party id -> share, checked, as x -> y."""
    if not isinstance(points, Mapping):
        raise errors.InvalidArgument(f"points must map party id to share, got {type(points).__name__}")
    if not points:
        raise errors.InvalidArgument("points must hold at least one share")
    return {_check_party(party) + 1: check_element(y, f"the share of party {party}") for party, y in points.items()}


def threshold(n: int) -> int:
    """The largest ``t`` with ``n >= 2t + 1``: ``(n - 1) // 2`` (0 for one or two parties)."""
    if not _is_int(n) or n < 1:
        raise errors.InvalidArgument(f"the number of parties must be an int >= 1, got {n!r:.60}")
    return (n - 1) // 2


# -- sharing and reconstruction ---------------------------------------------------------------------------------------
def share(secret: int, n: int, t: int | None = None, rng: random.Random | None = None) -> list[int]:
    """Shamir-share `secret` among `n` parties with a random polynomial of degree `t` (default `threshold(n)`).

    Returns the shares by party id: element ``i`` is ``f(i + 1)``. `rng` defaults to the operating system's
    randomness; pass a seeded `random.Random` only in tests.
    """
    check_element(secret, "the secret")
    if not _is_int(n) or n < 1:
        raise errors.InvalidArgument(f"the number of parties must be an int >= 1, got {n!r:.60}")
    if t is None:
        t = threshold(n)
    if not _is_int(t) or not 0 <= t < n:
        raise errors.InvalidArgument(f"the degree t must be an int in 0..n-1 = 0..{n - 1}, got {t!r:.60}")
    source = _SYSTEM_RANDOM if rng is None else rng
    coefficients = [source.randrange(P) for _ in range(t)]  # a_1 .. a_t; a_0 is the secret
    shares = []
    for x in range(1, n + 1):
        y = 0
        for a in reversed(coefficients):  # Horner: ((a_t x + a_{t-1}) x + ...) x + secret
            y = (y + a) * x % P
        shares.append((y + secret) % P)
    return shares


def _lagrange_at(xs: Sequence[int], at: int) -> list[int]:
    """Coefficients c_i with f(at) = sum_i c_i f(xs[i]) for every f of degree < len(xs) (xs distinct, nonzero mod P)."""
    coefficients = []
    for i, xi in enumerate(xs):
        numerator = denominator = 1
        for j, xj in enumerate(xs):
            if j != i:
                numerator = numerator * (at - xj) % P
                denominator = denominator * (xi - xj) % P
        coefficients.append(numerator * pow(denominator, -1, P) % P)
    return coefficients


def interpolate(points: Mapping[int, int], party: int | None = None) -> int:
    """Evaluate the polynomial of degree ``< len(points)`` through `points` (party id -> share).

    At the secret's point ``x = 0`` when `party` is None, else at party `party`'s point ``x = party + 1``.
    """
    by_x = _check_points(points)
    at = 0 if party is None else _check_party(party) + 1
    xs = list(by_x)
    return sum(c * by_x[x] for c, x in zip(_lagrange_at(xs, at), xs, strict=True)) % P


def reconstruct(points: Mapping[int, int]) -> int:
    """The secret from shares (party id -> share) by Lagrange interpolation at 0.

    Any ``t + 1`` shares of a degree-``t`` sharing give the secret; more do too when they are consistent (use
    `check_shares` to verify that rather than assume it).
    """
    return interpolate(points)


def recombination_vector(parties: Iterable[int]) -> list[int]:
    """BGW's recombination vector for `parties` (ids): the Lagrange coefficients at 0 of their points, in order.

    For any polynomial ``h`` of degree ``< len(parties)``, ``h(0) = sum_k lambda_k * h(parties[k] + 1)``; with all
    ``n >= 2t + 1`` parties this recovers a product sharing of degree ``2t``.
    """
    xs = [_check_party(p) + 1 for p in parties]
    if not xs:
        raise errors.InvalidArgument("the recombination vector needs at least one party")
    if len(set(xs)) != len(xs):
        raise errors.InvalidArgument(f"party ids must be distinct, got {[x - 1 for x in xs]}")
    return _lagrange_at(xs, 0)


def is_consistent(points: Mapping[int, int], t: int) -> bool:
    """Whether every share in `points` lies on one polynomial of degree at most `t`."""
    by_x = _check_points(points)
    if not _is_int(t) or t < 0:
        raise errors.InvalidArgument(f"the degree t must be an int >= 0, got {t!r:.60}")
    return _consistent(by_x, t)


def _consistent(by_x: Mapping[int, int], t: int) -> bool:
    xs = sorted(by_x)
    base, rest = xs[: t + 1], xs[t + 1 :]
    if not rest:
        return True  # t + 1 points or fewer always fit a degree-t polynomial
    for x in rest:
        coefficients = _lagrange_at(base, x)
        if sum(c * by_x[b] for c, b in zip(coefficients, base, strict=True)) % P != by_x[x]:
            return False
    return True


def check_shares(points: Mapping[int, int], t: int, *, what: str = "value") -> int:
    """The secret, after checking that all shares (party id -> share) lie on one polynomial of degree at most `t`.

    Raises `ComputationError` otherwise. With at least ``t + 3`` shares one wrong share can be told apart (the
    others still over-determine the polynomial): the error then names that party in its message and `member`.
    With fewer, the error says only that the shares disagree. `what` names the value in the message.
    """
    by_x = _check_points(points)
    if not _is_int(t) or t < 0:
        raise errors.InvalidArgument(f"the degree t must be an int >= 0, got {t!r:.60}")
    if len(by_x) < t + 1:
        raise ComputationError(f"{what}: {len(by_x)} shares cannot determine a polynomial of degree {t}")
    if _consistent(by_x, t):
        return interpolate(points)
    parties = sorted(x - 1 for x in by_x)
    if len(by_x) >= t + 3:
        for x in sorted(by_x):
            others = {k: v for k, v in by_x.items() if k != x}
            if _consistent(others, t):
                culprit = f"party {x - 1}"
                raise ComputationError(
                    f"{what}: the share from {culprit} is not on the degree-{t} polynomial through the shares of "
                    f"the other parties {[p for p in parties if p != x - 1]}",
                    member=culprit,
                )
    raise ComputationError(
        f"{what}: the shares from parties {parties} do not lie on one polynomial of degree {t} "
        f"(at least one party sent a wrong share; {len(by_x)} shares are too few to tell which)"
    )


# -- multiplication, in memory -----------------------------------------------------------------------------------------
def bgw_multiply(a: Sequence[int], b: Sequence[int], t: int, rng: random.Random | None = None) -> list[int]:
    """Every party's step of one BGW multiplication, run in memory: degree-`t` shares of ``a*b`` by party id.

    `a` and `b` are degree-`t` sharings among ``n = len(a) >= 2t + 1`` parties. This is exactly what
    `computation.multiply` does over the network, one party per process.
    """
    n = len(a)
    if len(b) != n:
        raise errors.InvalidArgument(f"a and b must have one share per party, got {n} and {len(b)}")
    if not _is_int(t) or t < 0 or n < 2 * t + 1:
        raise errors.InvalidArgument(f"a multiplication needs n >= 2t + 1 parties, got n = {n}, t = {t!r:.60}")
    local = [check_element(x, "a share of a") * check_element(y, "a share of b") % P for x, y in zip(a, b, strict=True)]
    sub_shares = [share(d, n, t, rng) for d in local]  # row i: what party i sends to each party j
    vector = recombination_vector(range(n))
    return [sum(vector[i] * sub_shares[i][j] for i in range(n)) % P for j in range(n)]


# -- encoding ---------------------------------------------------------------------------------------------------------
def encode_element(value: int) -> bytes:
    """A field element as 8 bytes, big-endian."""
    return check_element(value).to_bytes(ELEMENT_SIZE, "big")


def decode_element(data: bytes | bytearray | memoryview, *, sender: str = "peer") -> int:
    """The field element in exactly 8 big-endian bytes; `ComputationError` naming `sender` otherwise."""
    if len(data) != ELEMENT_SIZE:
        raise ComputationError(
            f"{sender} sent {len(data)} bytes where a field element ({ELEMENT_SIZE} bytes) was expected",
            member=sender,
        )
    value = int.from_bytes(data, "big")
    if value >= P:
        raise ComputationError(f"{sender} sent {value}, which is not a field element (>= 2**61-1)", member=sender)
    return value
