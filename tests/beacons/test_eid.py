"""Eddystone-EID maths: PRODUCT.md regression values, the resolver's window, key caching."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import eid
from beacons.eid import compute_eid, period_start, temporary_key, window, window_key

IK = bytes(range(16))


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0, "df8e76bbfec4efc5"),
        (1023, "df8e76bbfec4efc5"),
        (1024, "f7a6081d867e3474"),
        (65536, "ec31ae4cb8abc2d8"),
    ],
)
def test_regression_values_from_product_md(t: int, expected: str) -> None:
    assert compute_eid(IK, 10, t).hex() == expected


def _aes(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - spec primitive
    return enc.update(block) + enc.finalize()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.integers(0, 15), st.integers(0, 2**32 - 1))
def test_matches_the_spec_formula(ik: bytes, k: int, t: int) -> None:
    tk = _aes(ik, b"\x00" * 11 + b"\xff\x00\x00" + (t >> 16).to_bytes(2, "big"))
    quantised = (t >> k) << k
    expected = _aes(tk, b"\x00" * 11 + bytes([k]) + quantised.to_bytes(4, "big"))[:8]
    assert compute_eid(ik, k, t) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 15), st.integers(0, 2**32 - 1))
def test_identifier_is_constant_within_a_period(k: int, t: int) -> None:
    start = period_start(k, t)
    assert start <= t < start + (1 << k)
    assert compute_eid(IK, k, t) == compute_eid(IK, k, start)
    assert compute_eid(IK, k, t) == compute_eid(IK, k, start + (1 << k) - 1)


def test_window_lists_neighbouring_periods_oldest_first() -> None:
    got = window(IK, 10, 1500, before=1, after=2)
    assert [p for p, _ in got] == [0, 1024, 2048, 3072]
    assert got[0][1].hex() == "df8e76bbfec4efc5"
    assert got[1][1].hex() == "f7a6081d867e3474"
    assert all(e == compute_eid(IK, 10, p) for p, e in got)


def test_window_is_clipped_to_the_32_bit_counter() -> None:
    assert [p for p, _ in window(IK, 10, 5)] == [0, 1024]
    top = 2**32 - 1
    assert [p for p, _ in window(IK, 10, top)] == [2**32 - 2048, 2**32 - 1024]


def test_temporary_key_is_computed_once_per_65536_second_window() -> None:
    key = bytes(range(100, 116))  # not used elsewhere, so the cache state is ours
    window_key.cache_clear()
    for t in range(0, 65536, 997):
        compute_eid(key, 10, t)
    info = window_key.cache_info()
    assert info.misses == 1
    assert info.hits > 60
    compute_eid(key, 10, 65536)
    assert window_key.cache_info().misses == 2
    assert temporary_key(key, 65535) != temporary_key(key, 65536)


@pytest.mark.parametrize(
    ("ik", "k", "t", "message"),
    [
        (b"\x00" * 15, 10, 0, "16 bytes"),
        ("00" * 16, 10, 0, "16 bytes"),
        (IK, 16, 0, "exponent"),
        (IK, -1, 0, "exponent"),
        (IK, 10, -1, "32 bits"),
        (IK, 10, 2**32, "32 bits"),
    ],
)
def test_invalid_arguments_raise_value_error(ik: bytes, k: int, t: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_eid(ik, k, t)


def test_bytearray_keys_are_accepted() -> None:
    assert compute_eid(bytearray(IK), 10, 0) == compute_eid(IK, 10, 0)
    assert eid.EID_LEN == 8
