"""The FEC codec (``transport.fec``): any k of k+m shards give the data back, parity 0 is XOR,
and inputs of any shape either decode or raise ``FecError`` (STYLE rule 8).

Hypothesis settings are deterministic (``derandomize=True``); shard bytes come from a seeded
``random.Random`` so large groups stay cheap to generate.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.errors import TransportError
from transport.fec import MAX_SHARDS, FecError, decode, encode

FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def make_shards(k: int, size: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(k)]


def xor_all(shards: list[bytes]) -> bytes:
    total = 0
    for shard in shards:
        total ^= int.from_bytes(shard, "little")
    return total.to_bytes(len(shards[0]), "little")


def group(data: list[bytes], m: int) -> list[bytes]:
    return data + encode(data, m)


# --- recovery ------------------------------------------------------------------------------


@FAST
@given(
    k=st.integers(1, 32),
    m=st.integers(1, 8),
    size=st.integers(1, 1300),
    seed=st.integers(0, 2**32 - 1),
    order=st.randoms(use_true_random=False),
)
def test_any_k_shards_recover_the_data(
    k: int, m: int, size: int, seed: int, order: random.Random
) -> None:
    data = make_shards(k, size, seed)
    shards = group(data, m)
    kept = order.sample(range(k + m), k)  # which k survive, from no parity used to all of it
    assert decode({i: shards[i] for i in kept}, k, m, size) == data


@FAST
@given(k=st.integers(1, 16), m=st.integers(1, 8), data=st.data())
def test_losing_all_parity_or_the_most_data_both_work(k: int, m: int, data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 64))
    shards = group(make_shards(k, size, k * 31 + m), m)
    lost = min(k, m)
    worst = {i: shards[i] for i in range(lost, k + m)}  # first `lost` data shards gone
    assert decode(worst, k, m, size) == shards[:k]
    assert decode({i: shards[i] for i in range(k)}, k, m, size) == shards[:k]


@pytest.mark.parametrize(("k", "m"), [(1, 1), (1, 4), (2, 3), (3, 3), (4, 4), (5, 2), (3, 6)])
def test_every_k_subset_decodes(k: int, m: int) -> None:
    """The MDS property, exhaustively for small codes: every k x k submatrix is invertible."""
    data = make_shards(k, 17, seed=k + m)
    shards = group(data, m)
    for kept in itertools.combinations(range(k + m), k):
        assert decode({i: shards[i] for i in kept}, k, m, 17) == data, kept


def test_largest_code_fits_the_field() -> None:
    for k, m in [(MAX_SHARDS - 5, 5), (1, MAX_SHARDS - 1), (128, MAX_SHARDS - 128)]:
        data = make_shards(k, 3, seed=k)
        shards = group(data, m)
        lost = min(k, m)
        assert decode({i: shards[i] for i in range(lost, k + m)}, k, m, 3) == data


def test_typical_sizes_round_trip() -> None:
    """Keyframe groups (k=64) and game messages (k=1..4) at real shard lengths."""
    for k, m, size in [(64, 8, 1200), (64, 16, 1172), (10, 2, 1200), (4, 1, 1100), (1, 2, 90)]:
        data = make_shards(k, size, seed=size)
        shards = group(data, m)
        lost = min(k, m)
        assert decode({i: shards[i] for i in range(lost, k + m)}, k, m, size) == data


# --- XOR and the shape of the parity -------------------------------------------------------


@FAST
@given(k=st.integers(1, 20), size=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_single_parity_is_xor(k: int, size: int, seed: int) -> None:
    data = make_shards(k, size, seed)
    assert encode(data, 1) == [xor_all(data)]


@FAST
@given(k=st.integers(1, 20), m=st.integers(2, 12), size=st.integers(1, 300))
def test_rs_parity_row_zero_is_xor_and_parity_is_prefix_stable(k: int, m: int, size: int) -> None:
    """The Reed-Solomon path (table kernel, m >= 2) computes the same row 0 as the XOR path,
    and fewer parity shards are a prefix of more: repair can be added later."""
    data = make_shards(k, size, seed=k * m)
    parity = encode(data, m)
    assert parity[0] == xor_all(data) == encode(data, 1)[0]
    assert encode(data, m - 1) == parity[: m - 1]


def test_one_loss_is_repaired_from_xor_parity_or_from_a_later_parity() -> None:
    data = make_shards(6, 40, seed=3)
    shards = group(data, 3)
    for lost in range(6):
        for parity_index in (6, 7, 8):
            received = {i: shards[i] for i in range(6) if i != lost}
            received[parity_index] = shards[parity_index]
            assert decode(received, 6, 3, 40) == data


def test_lengths_not_a_multiple_of_eight_use_the_byte_path() -> None:
    for size in (1, 7, 9, 1201):
        data = make_shards(5, size, seed=size)
        shards = group(data, 1)
        assert shards[5] == xor_all(data)
        assert decode({i: shards[i] for i in range(1, 6)}, 5, 1, size) == data


# --- more than k shards --------------------------------------------------------------------


def test_all_data_present_returns_the_same_objects() -> None:
    data = make_shards(8, 100, seed=1)
    shards = group(data, 4)
    received = {i: shards[i] for i in range(12)}
    out = decode(received, 8, 4, 100)
    assert all(a is b for a, b in zip(out, data, strict=True))  # no copy, no arithmetic


def test_present_data_and_lowest_parity_are_preferred() -> None:
    """Extra parity shards are not read: garbage in the unneeded ones changes nothing."""
    data = make_shards(8, 64, seed=2)
    shards = group(data, 4)
    received = {i: shards[i] for i in range(8) if i not in (2, 5)}
    received[8], received[9] = shards[8], shards[9]  # the two parity shards that get used
    received[10], received[11] = bytes(64), b"\xff" * 64  # wrong content, never used
    assert decode(received, 8, 4, 64) == data
    # All data present: even wrong parity is ignored.
    full = {i: shards[i] for i in range(8)} | {8: bytes(64), 11: bytes(64)}
    assert decode(full, 8, 4, 64) == data


def test_bytes_like_shards_are_accepted() -> None:
    data = make_shards(4, 32, seed=4)
    parity = encode([bytearray(data[0]), memoryview(data[1]), data[2], data[3]], 2)
    assert parity == encode(data, 2)
    received: dict[int, bytes | bytearray | memoryview] = {
        1: memoryview(data[1]),
        3: bytearray(data[3]),
        4: parity[0],
        5: parity[1],
    }
    out = decode(received, 4, 2, 32)
    assert out == data
    assert all(type(shard) is bytes for shard in out)


# --- errors --------------------------------------------------------------------------------


def test_error_is_a_transport_error() -> None:
    assert issubclass(FecError, TransportError)


@pytest.mark.parametrize(
    ("shards", "parity"),
    [
        ([], 1),  # no data shard
        ([b"ab"], 0),  # parity < 1
        ([b"ab"], -3),
        ([b"ab", b"abc"], 1),  # unequal lengths
        ([b"", b""], 1),  # empty shards
        ([b"a"] * 250, 6),  # k + m > 255
        ([b"a"], MAX_SHARDS),
        ([b"ab", "ab"], 2),  # not bytes
        ([b"ab", None], 2),
        (b"abcd", 1),  # bytes is a sequence of ints, not of shards
        ("ab", 1),
        (None, 1),
        ([b"ab"], 1.5),
        ([b"ab"], "2"),
    ],
)
def test_encode_rejects(shards: Any, parity: Any) -> None:
    with pytest.raises(FecError):
        encode(shards, parity)


def test_encode_accepts_the_largest_code() -> None:
    assert len(encode([b"a"] * 250, 5)) == 5


def _valid_received() -> dict[int, bytes]:
    shards = group(make_shards(4, 10, seed=9), 2)
    return {i: shards[i] for i in range(6)}


@pytest.mark.parametrize(
    ("received", "k", "parity", "shard_bytes"),
    [
        ({0: b"x" * 10, 1: b"x" * 10, 2: b"x" * 10}, 4, 2, 10),  # too few
        ({}, 4, 2, 10),
        (_valid_received() | {6: b"x" * 10}, 4, 2, 10),  # index past k + m - 1
        ({-1: b"x" * 10} | {i: b"x" * 10 for i in range(4)}, 4, 2, 10),  # negative index
        ({"0": b"x" * 10} | {i: b"x" * 10 for i in range(1, 5)}, 4, 2, 10),  # not an int
        ({0: b"x" * 9} | {i: b"x" * 10 for i in range(1, 5)}, 4, 2, 10),  # wrong size
        ({i: b"x" * 10 for i in range(5)}, 4, 2, 11),  # sizes disagree with shard_bytes
        ({i: b"x" * 10 for i in range(5)}, 4, 2, 0),  # shard_bytes < 1
        ({i: b"x" * 10 for i in range(5)}, 4, 0, 10),  # parity < 1
        ({i: b"x" * 10 for i in range(5)}, 0, 2, 10),  # k < 1
        ({i: b"x" * 10 for i in range(5)}, 250, 6, 10),  # k + m > 255
        ({i: "x" * 10 for i in range(5)}, 4, 2, 10),  # not bytes
        ({i: None for i in range(5)}, 4, 2, 10),
        ([b"x" * 10] * 5, 4, 2, 10),  # not a mapping
        (None, 4, 2, 10),
        ({i: b"x" * 10 for i in range(5)}, 4.0, 2, 10),
        ({i: b"x" * 10 for i in range(5)}, 4, 2, "10"),
    ],
)
def test_decode_rejects(received: Any, k: Any, parity: Any, shard_bytes: Any) -> None:
    with pytest.raises(FecError):
        decode(received, k, parity, shard_bytes)


def test_non_contiguous_memoryview_is_rejected() -> None:
    strided = memoryview(bytes(20))[::2]
    with pytest.raises(FecError):
        encode([strided, strided], 1)
    with pytest.raises(FecError):
        decode({0: strided, 1: strided}, 2, 1, 10)


# --- garbage (STYLE rule 8): anything goes in, only FecError comes out -----------------------

_HASHABLE = st.one_of(
    st.none(),
    st.integers(-300, 300),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.binary(max_size=12),
)
_ANYTHING = st.one_of(_HASHABLE, st.builds(bytearray, st.binary(max_size=12)))


@FAST
@given(
    received=st.one_of(
        st.dictionaries(st.one_of(st.integers(-4, 12), _HASHABLE), _ANYTHING, max_size=10),
        st.dictionaries(st.integers(-2, 12), st.binary(min_size=0, max_size=6), max_size=12),
        _ANYTHING,
    ),
    k=st.one_of(st.integers(-2, 10), _ANYTHING),
    parity=st.one_of(st.integers(-2, 6), _ANYTHING),
    shard_bytes=st.one_of(st.integers(-1, 6), _ANYTHING),
)
def test_decode_garbage_only_raises_fec_error(
    received: Any, k: Any, parity: Any, shard_bytes: Any
) -> None:
    try:
        out = decode(received, k, parity, shard_bytes)
    except FecError:
        return
    assert len(out) == k
    assert all(type(shard) is bytes and len(shard) == shard_bytes for shard in out)


@FAST
@given(
    shards=st.one_of(
        st.lists(st.binary(min_size=0, max_size=6), max_size=8),
        st.lists(_ANYTHING, max_size=4),
        _ANYTHING,
    ),
    parity=st.one_of(st.integers(-2, 300), _ANYTHING),
)
def test_encode_garbage_only_raises_fec_error(shards: Any, parity: Any) -> None:
    try:
        out = encode(shards, parity)
    except FecError:
        return
    assert len(out) == parity
    assert all(len(shard) == len(shards[0]) for shard in out)
