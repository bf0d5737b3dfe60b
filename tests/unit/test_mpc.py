"""Shamir sharing and BGW multiplication (`stoffelnet_core.mpc`): pure functions, checked exhaustively in memory."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoffelnet_core import errors, mpc
from stoffelnet_core.mpc import P

elements = st.integers(min_value=0, max_value=P - 1)
party_counts = st.integers(min_value=1, max_value=9)
seeds = st.integers(min_value=0, max_value=2**32)


def test_the_field_is_the_mersenne_prime_and_fits_eight_bytes() -> None:
    assert P == 2**61 - 1
    assert pow(3, P - 1, P) == 1  # Fermat: consistent with a prime
    assert mpc.encode_element(P - 1) == (P - 1).to_bytes(8, "big")
    assert mpc.ELEMENT_SIZE == 8


@pytest.mark.parametrize(("n", "t"), [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (7, 3), (10, 4)])
def test_threshold_leaves_room_for_one_multiplication(n: int, t: int) -> None:
    assert mpc.threshold(n) == t
    assert n >= 2 * t + 1


def test_shares_are_the_polynomial_at_party_id_plus_one() -> None:
    # f(x) = 5 + a x with a drawn from the rng: party i holds f(i + 1), never f(0)
    rng = random.Random(1)
    a = random.Random(1).randrange(P)
    assert mpc.share(5, 3, 1, rng) == [(5 + a * x) % P for x in (1, 2, 3)]


def test_degree_zero_shares_are_the_secret() -> None:
    assert mpc.share(42, 2, 0, random.Random(0)) == [42, 42]
    assert mpc.share(42, 1) == [42]


@settings(max_examples=200)
@given(secret=elements, n=party_counts, seed=seeds)
def test_reconstruct_of_share_is_the_secret(secret: int, n: int, seed: int) -> None:
    shares = mpc.share(secret, n, rng=random.Random(seed))
    assert len(shares) == n
    assert all(0 <= s < P for s in shares)
    assert mpc.reconstruct(dict(enumerate(shares))) == secret


@settings(max_examples=100)
@given(secret=elements, n=st.integers(min_value=1, max_value=7), seed=seeds)
def test_any_t_plus_one_shares_reconstruct(secret: int, n: int, seed: int) -> None:
    t = mpc.threshold(n)
    shares = mpc.share(secret, n, t, random.Random(seed))
    for subset in itertools.combinations(range(n), t + 1):
        assert mpc.reconstruct({i: shares[i] for i in subset}) == secret


@settings(max_examples=100)
@given(secret=elements, other=elements, seed=seeds)
def test_t_shares_fit_every_secret(secret: int, other: int, seed: int) -> None:
    # n = 5, t = 2: the shares of parties 0 and 3 lie on a degree-2 polynomial with *any* value at 0, so they say
    # nothing about the secret. Build that polynomial for `other`: pick party 1's value so that f(0) = other.
    shares = mpc.share(secret, 5, 2, random.Random(seed))
    seen = {0: shares[0], 3: shares[3]}
    base = mpc.reconstruct({**seen, 1: 0})
    slope = mpc.reconstruct({0: 0, 3: 0, 1: 1})  # f(0) is linear in party 1's value, with this nonzero weight
    assert slope != 0
    value = (other - base) * pow(slope, -1, P) % P
    assert mpc.reconstruct({**seen, 1: value}) == other


@settings(max_examples=100)
@given(a=elements, b=elements, n=st.integers(min_value=1, max_value=9), seed=seeds)
def test_bgw_multiplication_gives_degree_t_shares_of_the_product(a: int, b: int, n: int, seed: int) -> None:
    rng = random.Random(seed)
    t = mpc.threshold(n)
    product = mpc.bgw_multiply(mpc.share(a, n, t, rng), mpc.share(b, n, t, rng), t, rng)
    assert mpc.is_consistent(dict(enumerate(product)), t)  # degree t again, not 2t
    assert mpc.check_shares(dict(enumerate(product)), t) == a * b % P
    for subset in itertools.combinations(range(n), t + 1):
        assert mpc.reconstruct({i: product[i] for i in subset}) == a * b % P


def test_local_products_have_degree_2t_and_the_recombination_vector_recovers_them() -> None:
    rng = random.Random(7)
    n, t = 5, 2
    a, b = mpc.share(11, n, t, rng), mpc.share(13, n, t, rng)
    local = [x * y % P for x, y in zip(a, b, strict=True)]
    assert not mpc.is_consistent(dict(enumerate(local)), t)  # degree 2t: too high for t
    assert mpc.is_consistent(dict(enumerate(local)), 2 * t)
    vector = mpc.recombination_vector(range(n))
    assert sum(w * d for w, d in zip(vector, local, strict=True)) % P == 143
    assert sum(vector) % P == 1  # the constant polynomial 1 is recovered as 1


@settings(max_examples=100)
@given(values=st.lists(elements, min_size=1, max_size=6), n=party_counts, seed=seeds)
def test_shares_add_up_to_shares_of_the_sum(values: list[int], n: int, seed: int) -> None:
    rng = random.Random(seed)
    sharings = [mpc.share(v, n, rng=rng) for v in values]
    summed = {i: sum(s[i] for s in sharings) % P for i in range(n)}
    assert mpc.check_shares(summed, mpc.threshold(n)) == sum(values) % P


@settings(max_examples=100)
@given(secret=elements, n=st.integers(min_value=2, max_value=9), seed=seeds, data=st.data())
def test_a_wrong_share_is_detected_and_named_when_there_is_redundancy(
    secret: int, n: int, seed: int, data: st.DataObject
) -> None:
    t = mpc.threshold(n)
    shares = dict(enumerate(mpc.share(secret, n, t, random.Random(seed))))
    culprit = data.draw(st.integers(min_value=0, max_value=n - 1))
    shares[culprit] = (shares[culprit] + data.draw(st.integers(min_value=1, max_value=P - 1))) % P
    assert n >= t + 2  # n >= 2t + 1 leaves at least one share more than t + 1: a wrong one always shows
    assert not mpc.is_consistent(shares, t)
    with pytest.raises(errors.ComputationError) as caught:
        mpc.check_shares(shares, t, what="sum")
    assert str(caught.value).startswith("sum: ")
    if n >= t + 3:
        assert caught.value.member == f"party {culprit}"
        assert f"party {culprit}" in str(caught.value)
    else:
        assert caught.value.member is None
        assert "too few to tell which" in str(caught.value)


def test_three_parties_detect_but_cannot_name() -> None:
    shares = dict(enumerate(mpc.share(9, 3, 1, random.Random(3))))
    shares[2] = (shares[2] + 1) % P
    with pytest.raises(errors.ComputationError, match=r"parties \[0, 1, 2\] do not lie on one polynomial of degree 1"):
        mpc.check_shares(shares, 1)


def test_encoding_round_trips_and_refuses_what_is_not_an_element() -> None:
    for value in (0, 1, 255, 2**32, P - 1):
        assert mpc.decode_element(mpc.encode_element(value)) == value
    with pytest.raises(errors.ComputationError, match="client 1 sent 7 bytes") as caught:
        mpc.decode_element(b"\x00" * 7, sender="client 1")
    assert caught.value.member == "client 1"
    with pytest.raises(errors.ComputationError, match="not a field element"):
        mpc.decode_element(P.to_bytes(8, "big"), sender="party 0")
    with pytest.raises(errors.ComputationError):
        mpc.decode_element(b"\xff" * 8)


@pytest.mark.parametrize(
    "call",
    [
        lambda: mpc.share(P, 3),
        lambda: mpc.share(-1, 3),
        lambda: mpc.share(True, 3),  # a bool is not a field element
        lambda: mpc.share(1, 0),
        lambda: mpc.share(1, 3, 3),  # degree must be below n
        lambda: mpc.reconstruct({}),
        lambda: mpc.reconstruct({0: P}),
        lambda: mpc.reconstruct({-1: 1}),
        lambda: mpc.recombination_vector([0, 0]),
        lambda: mpc.recombination_vector([]),
        lambda: mpc.bgw_multiply([1, 2], [1, 2], 1),  # n = 2 < 2t + 1
        lambda: mpc.bgw_multiply([1, 2, 3], [1, 2], 1),
        lambda: mpc.encode_element(2**64),
        lambda: mpc.threshold(0),
    ],
)
def test_bad_arguments_are_invalid_argument(call: object) -> None:
    with pytest.raises(errors.InvalidArgument):
        call()  # type: ignore[operator]


def test_default_randomness_is_fresh() -> None:
    assert mpc.share(1, 3) != mpc.share(1, 3)  # 2**-61 chance of a false failure
