"""Forward error correction for groups of equal-length shards: a systematic Reed-Solomon
erasure code over GF(2^8), pure (no I/O, no clock).

A group is ``k`` data shards (indices ``0..k-1``) protected by ``m`` parity shards (indices
``k..k+m-1``); any ``k`` of the ``k + m`` recover the data (the code is maximum distance
separable). The generator is ``[I; C]`` with ``C`` an ``m x k`` Cauchy matrix,
``C[i][j] = 1 / (x_i + y_j)`` with ``x_i = k + i`` and ``y_j = j``: every square submatrix of a
Cauchy matrix is invertible, which is exactly the MDS property. Its columns are then scaled so
that row 0 is all ones (scaling rows or columns of ``C`` by non-zero constants keeps every
square submatrix invertible), hence:

* parity shard 0 is the plain XOR of the data shards, whatever ``m`` is; with ``m == 1`` the
  code *is* XOR parity, computed by the XOR fast path;
* parity row ``i`` depends on ``k`` and ``i`` only, so ``encode(d, 2)`` is a prefix of
  ``encode(d, 5)``: a sender can add repair shards later without re-encoding.

The codec knows nothing of fragments: shards must already be padded to one length, and the
caller carries each fragment's true length itself (in its header).

Speed: a coefficient matrix becomes a table whose entry ``[j * 256 + v]`` packs the products of
byte ``v`` of input shard ``j`` with every output row (up to eight rows per machine word), so
one gather plus one XOR reduction computes all output shards (``_apply``). Tables are cached
per ``(k, m)`` for encoding and per loss pattern for decoding (bounded LRU caches; an entry
is ``k * 256 * width`` bytes, 128 KB for ``k=64, m=8``). Decoding a single loss with parity 0
present is a plain XOR. Field: GF(2^8) modulo ``x^8 + x^4 + x^3 + x^2 + 1`` (0x11d), the usual
Reed-Solomon polynomial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from transport.errors import TransportError

MAX_SHARDS = 255
"""Upper bound on ``k + m``, the classic Reed-Solomon ``n <= 2^8 - 1``: the evaluation points
``x_i`` and ``y_j`` must be distinct elements of GF(2^8)."""

_POLY = 0x11D

U8 = npt.NDArray[np.uint8]
Shard = bytes | bytearray | memoryview
"""What a shard may be; ``bytes`` is the common case and is never copied on the way out."""


class FecError(TransportError):
    """A group the code cannot encode or decode: bad ``k``/``m``, unequal or wrong shard
    sizes, indices out of range, or fewer than ``k`` shards received."""


def _build_tables() -> tuple[U8, U8]:
    exp = np.zeros(510, dtype=np.uint8)
    log = np.zeros(256, dtype=np.intp)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= _POLY
    exp[255:] = exp[:255]  # so exp[log a + log b] needs no modulo
    mul = np.zeros((256, 256), dtype=np.uint8)
    mul[1:, 1:] = exp[log[1:, None] + log[None, 1:]]  # row and column 0 stay 0
    inv = np.zeros(256, dtype=np.uint8)
    inv[1:] = exp[255 - log[1:]]
    mul.setflags(write=False)
    inv.setflags(write=False)
    return mul, inv


_MUL, _INV = _build_tables()
_SCALE = tuple(row.tobytes() for row in _MUL)
"""``row.translate(_SCALE[c])`` multiplies every byte of ``row`` by ``c``, at C speed."""
_OFFSETS = (np.arange(MAX_SHARDS, dtype=np.uint16) * 256)[:, None]
"""Row ``j`` is ``j * 256``: added to data byte ``v`` it indexes entry ``[j, v]`` of a table.
``254 * 256 + 255`` fits ``uint16``, and a ``uint16`` index array is the cheapest to build."""
_OFFSETS.setflags(write=False)


# Small matrices (decode plans) are lists of rows as ``bytes``: a row operation is one
# ``translate`` and one big-int XOR, far cheaper than numpy's per-call cost at these sizes.


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _combine(coefficients: bytes, rows: Sequence[bytes]) -> bytes:
    """Sum of ``coefficients[t] * rows[t]`` over GF(2^8): one row of a matrix product."""
    total = 0
    for coefficient, row in zip(coefficients, rows, strict=True):
        if coefficient:
            total ^= int.from_bytes(row.translate(_SCALE[coefficient]), "little")
    return total.to_bytes(len(rows[0]), "little")


def _invert(rows: list[bytes]) -> list[bytes]:
    """Gauss-Jordan inverse over GF(2^8) of a square matrix given as rows."""
    n = len(rows)
    work = [row + bytes(i) + b"\x01" + bytes(n - i - 1) for i, row in enumerate(rows)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if work[r][col]), None)
        if pivot is None:  # impossible for submatrices of a Cauchy matrix
            raise FecError("singular decode matrix")
        work[col], work[pivot] = work[pivot], work[col]
        work[col] = work[col].translate(_SCALE[int(_INV[work[col][col]])])
        for r in range(n):
            factor = work[r][col]
            if r != col and factor:
                work[r] = _xor(work[r], work[col].translate(_SCALE[factor]))
    return [row[n:] for row in work]


@lru_cache(maxsize=64)
def _cauchy(k: int, m: int) -> U8:
    """The ``m x k`` parity block of the generator, row 0 all ones (see the module doc)."""
    x = np.arange(k, k + m, dtype=np.uint8)[:, None]
    y = np.arange(k, dtype=np.uint8)[None, :]
    c: U8 = _INV[x ^ y]  # x_i + y_j is XOR in GF(2^8), never 0 since x_i >= k > y_j
    c = _MUL[c, _INV[c[0]][None, :]]  # scale column j by 1 / c[0, j]
    c.setflags(write=False)
    return c


@dataclass(frozen=True, slots=True, eq=False)
class _Plan:
    """How to compute ``rows`` output shards from ``k`` input shards.

    ``table`` is ``None`` when the single output row is all ones (plain XOR). Otherwise it has
    one entry per (input shard, byte value), each entry the products with every output row,
    padded to 1, 2, 4 or a multiple of 8 bytes and viewed as one unsigned word (or several
    ``uint64`` words for more than eight rows).
    """

    rows: int
    table: npt.NDArray[np.unsignedinteger] | None


_XOR = _Plan(rows=1, table=None)
_WORD = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _plan(coefficients: U8) -> _Plan:
    rows, k = coefficients.shape
    if rows == 1 and bool((coefficients == 1).all()):
        return _Plan(rows=1, table=None)
    width = 1 if rows == 1 else 2 if rows == 2 else 4 if rows <= 4 else -(-rows // 8) * 8
    if width > rows:  # zero coefficients: products 0, in lanes nobody reads
        padding = np.zeros((width - rows, k), dtype=np.uint8)
        coefficients = np.concatenate([coefficients, padding])
    # [j, v, i] = c_ij * v: gather whole rows of _MUL, then one transposing copy.
    packed = np.ascontiguousarray(_MUL.take(coefficients.T, axis=0).transpose(0, 2, 1))
    flat = packed.reshape(k * 256, width)
    table = flat.view(_WORD[width])[:, 0] if width <= 8 else flat.view(np.uint64)
    table.setflags(write=False)
    return _Plan(rows=rows, table=table)


_CHUNK_BYTES = 1 << 18
"""Temporaries per pass of ``_apply`` (index, numpy's ``intp`` copy of it, gathered words).
Measured: one pass over a whole (64 x 1200) group allocates ~1 MB, and glibc hands such blocks
back to the kernel on free, so each call paid ~0.7 ms of page faults (vs ~0.15 ms); passes of
at most 256 KB stay in the heap. Small groups (k=10 at m=2) still take a single pass."""


def _apply(plan: _Plan, joined: bytes, k: int, size: int) -> list[bytes]:
    """Output shards of ``plan`` for ``k`` input shards of ``size`` bytes, concatenated."""
    table = plan.table
    if table is None:
        # XOR fast path: reduce 8 bytes per operation when the length allows it.
        dtype = np.uint64 if size % 8 == 0 else np.uint8
        words = np.frombuffer(joined, dtype=dtype).reshape(k, -1)
        return [np.bitwise_xor.reduce(words, axis=0).tobytes()]
    data = np.frombuffer(joined, dtype=np.uint8).reshape(k, size)
    # Per byte of a shard: a uint16 index, numpy's intp copy of it inside take(), one entry.
    step = max(1, _CHUNK_BYTES // (size * (2 + 8 + table.strides[0])))
    summed = None
    for start in range(0, k, step):
        stop = min(k, start + step)
        index = np.add(data[start:stop], _OFFSETS[start:stop], dtype=np.uint16)
        gathered = np.take(table, index, axis=0)  # (rows, size) or (rows, size, words)
        part = np.bitwise_xor.reduce(gathered, axis=0)
        if summed is None:
            summed = part
        else:
            np.bitwise_xor(summed, part, out=summed)
    assert summed is not None  # k >= 1
    columns = summed.view(np.uint8).reshape(size, -1)  # column i is output row i
    return [columns[:, i].tobytes() for i in range(plan.rows)]


@lru_cache(maxsize=64)
def _encode_plan(k: int, m: int) -> _Plan:
    return _plan(_cauchy(k, m))


@lru_cache(maxsize=128)
def _decode_plan(k: int, m: int, lost: tuple[int, ...], used: tuple[int, ...]) -> _Plan:
    """Rows recovering the ``lost`` data shards from the present data shards followed by the
    parity shards ``used`` (indices ``>= k``), in that order.

    With ``S`` the present and ``L`` the lost data indices, and ``P`` the used parity rows,
    ``p_P = C[P,S] d_S + C[P,L] d_L``, so ``d_L = C[P,L]^-1 C[P,S] d_S + C[P,L]^-1 p_P``:
    only ``len(lost)`` output rows, each over ``k`` inputs.
    """
    parity_rows = [_cauchy(k, m)[i - k] for i in used]
    lost_set = set(lost)
    present = [j for j in range(k) if j not in lost_set]
    inverse = _invert([row[list(lost)].tobytes() for row in parity_rows])
    known = [row[present].tobytes() for row in parity_rows]
    # Output row r is [ (inverse @ C[P,S])[r] | inverse[r] ], in the order of the inputs.
    coefficients = np.frombuffer(
        b"".join(_combine(row, known) + row for row in inverse), dtype=np.uint8
    ).reshape(len(lost), k)
    return _plan(coefficients)


def _check_code(k: object, parity: object) -> tuple[int, int]:
    if not isinstance(k, int) or not isinstance(parity, int):
        raise FecError("k and parity must be integers")
    if k < 1:
        raise FecError(f"need at least one data shard, got k={k}")
    if parity < 1:
        raise FecError(f"need at least one parity shard, got {parity}")
    if k + parity > MAX_SHARDS:
        raise FecError(f"k + parity = {k + parity} exceeds {MAX_SHARDS}")
    return k, parity


def _size(shard: object) -> int:
    """Byte length of a shard; a ``FecError`` for anything that is not contiguous bytes."""
    if isinstance(shard, bytes | bytearray):
        return len(shard)
    if isinstance(shard, memoryview) and shard.c_contiguous:
        return shard.nbytes
    raise FecError(
        f"a shard must be bytes, bytearray or a contiguous memoryview, not {shard!r:.40}"
    )


def encode(shards: Sequence[Shard], parity: int) -> list[bytes]:
    """The ``parity`` parity shards of the data ``shards`` (all the same non-zero length).

    Parity shard ``i`` goes at index ``len(shards) + i`` of the group. Parity shard 0 is the
    XOR of the data shards, and the result for ``parity=m`` is a prefix of the one for any
    larger ``m``.
    """
    candidate: object = shards  # typed callers cannot get this wrong; untyped ones can
    if not isinstance(candidate, Sequence) or isinstance(candidate, bytes | bytearray | str):
        raise FecError("shards must be a sequence of byte strings")
    k, m = _check_code(len(shards), parity)
    size = _size(shards[0])
    if size == 0:
        raise FecError("shards must not be empty")
    for shard in shards:
        if _size(shard) != size:
            raise FecError("data shards must all have the same length (pad them first)")
    joined = b"".join(shards)
    return _apply(_XOR if m == 1 else _encode_plan(k, m), joined, k, size)


def decode(received: Mapping[int, Shard], k: int, parity: int, shard_bytes: int) -> list[bytes]:
    """The ``k`` data shards of a group, from any ``k`` or more of its ``k + parity`` shards.

    ``received`` maps a shard's index in the group (data ``0..k-1``, parity
    ``k..k+parity-1``) to its bytes, each ``shard_bytes`` long. Present data shards are
    always used; only as many parity shards as data shards are missing, lowest index first.
    When every data shard is present they are returned as given (``bytes`` are not copied).
    Raises :class:`FecError` for a bad code, bad indices or sizes, or too few shards.
    """
    k, m = _check_code(k, parity)
    if not isinstance(shard_bytes, int) or shard_bytes < 1:
        raise FecError(f"shard_bytes must be a positive integer, got {shard_bytes!r:.40}")
    if not isinstance(received, Mapping):
        raise FecError("received must map shard indices to shards")
    for index, shard in received.items():
        if not isinstance(index, int) or not 0 <= index < k + m:
            raise FecError(f"shard index {index!r:.40} is outside 0..{k + m - 1}")
        if _size(shard) != shard_bytes:
            raise FecError(f"shard {index} is {_size(shard)} bytes, expected {shard_bytes}")
    if len(received) < k:
        raise FecError(f"{len(received)} shards received, {k} needed")

    lost = tuple(j for j in range(k) if j not in received)
    if not lost:
        return [_as_bytes(received[j]) for j in range(k)]
    used = sorted(i for i in received if i >= k)[: len(lost)]
    inputs = [received[j] for j in range(k) if j in received]
    inputs += [received[i] for i in used]
    # One loss repaired by parity 0 (the all-ones row) is XOR: no plan, no cache entry.
    plan = _XOR if used == [k] else _decode_plan(k, m, lost, tuple(used))
    recovered = _apply(plan, b"".join(inputs), k, shard_bytes)
    out = [_as_bytes(received[j]) if j in received else b"" for j in range(k)]
    for j, shard in zip(lost, recovered, strict=True):
        out[j] = shard
    return out


def _as_bytes(shard: Shard) -> bytes:
    return shard if isinstance(shard, bytes) else bytes(shard)
