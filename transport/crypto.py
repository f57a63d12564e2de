"""Key agreement, key schedule, packet protection, the replay window and retry tokens.

X25519 gives a shared secret; HKDF-SHA256 expands it, bound to both connection IDs and both
public keys, into one key and IV per direction plus a confirmation key; ChaCha20-Poly1305
seals every packet after the handshake with a nonce made from the packet number (PROTOCOL.md §5).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from transport.errors import DecodeError

KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
PUBLIC_KEY_BYTES = 32
HKDF_SALT = b"framewire/1 handshake"
HKDF_INFO = b"framewire/1 keys"
TOKEN_MAC_BYTES = 16
_TOKEN_TIME = struct.Struct("!Q")


class KeyPair:
    """An ephemeral X25519 key pair."""

    __slots__ = ("_private", "public")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """A key pair from 32 bytes (the caller's randomness source, so tests can pin it)."""
        return cls(X25519PrivateKey.from_private_bytes(seed))

    def exchange(self, peer_public: bytes) -> bytes:
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # a low-order point gives an all-zero secret
            raise DecodeError("bad peer public key") from exc
        return shared


@dataclass(frozen=True, slots=True)
class SessionKeys:
    client_key: bytes
    client_iv: bytes
    server_key: bytes
    server_iv: bytes
    confirm_key: bytes


def derive_keys(
    shared: bytes, client_cid: bytes, server_cid: bytes, client_pub: bytes, server_pub: bytes
) -> SessionKeys:
    """The key schedule (PROTOCOL.md §5.2).

    Static identity keys (a later issue) mix in as extra input keying material, announced by a
    handshake extension, so adding them needs no new wire version.
    """
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=3 * KEY_BYTES + 2 * IV_BYTES,
        salt=HKDF_SALT,
        info=HKDF_INFO + client_cid + server_cid + client_pub + server_pub,
    ).derive(shared)
    k, iv = KEY_BYTES, IV_BYTES
    return SessionKeys(
        client_key=okm[0:k],
        client_iv=okm[k : k + iv],
        server_key=okm[k + iv : 2 * k + iv],
        server_iv=okm[2 * k + iv : 2 * k + 2 * iv],
        confirm_key=okm[2 * k + 2 * iv :],
    )


class PacketProtection:
    """AEAD for one direction: nonce = IV xor the 64-bit packet number (PROTOCOL.md §5.3)."""

    __slots__ = ("_aead", "_iv")

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._iv = int.from_bytes(iv, "big")

    def seal(self, packet_number: int, header: bytes, plaintext: bytes) -> bytes:
        nonce = (self._iv ^ packet_number).to_bytes(IV_BYTES, "big")
        return self._aead.encrypt(nonce, plaintext, header)

    @property
    def aead(self) -> ChaCha20Poly1305:
        return self._aead

    @property
    def iv(self) -> int:
        return self._iv

    def open(self, packet_number: int, header: bytes, ciphertext: bytes) -> bytes:
        nonce = (self._iv ^ packet_number).to_bytes(IV_BYTES, "big")
        try:
            return self._aead.decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise DecodeError("packet authentication failed") from None


def seal_confirm(confirm_key: bytes, header: bytes, plaintext: bytes) -> bytes:
    """Seal the ACCEPT body. The confirmation key is used for this one message only."""
    return ChaCha20Poly1305(confirm_key).encrypt(bytes(IV_BYTES), plaintext, header)


def open_confirm(confirm_key: bytes, header: bytes, sealed: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(confirm_key).decrypt(bytes(IV_BYTES), sealed, header)
    except InvalidTag:
        raise DecodeError("ACCEPT authentication failed") from None


class ReplayWindow:
    """Rejects packet numbers already seen or too old to tell (RFC 4303 §3.4.3 style).

    Check before decrypting (cheap), mark only after the packet authenticated, so forged
    packets cannot move the window. Each of ``size`` slots remembers the last number that
    landed on it (``pn % size``): O(1) per packet, with no big-integer shifting.
    """

    __slots__ = ("_size", "_slots", "highest")

    def __init__(self, size: int) -> None:
        self._size = size
        self.highest = -1
        """The highest number marked; anything above it is fresh (callers may test that
        first and skip the call)."""
        self._slots = [-1] * size

    def is_fresh(self, pn: int) -> bool:
        if pn > self.highest:
            return True
        return self.highest - pn < self._size and self._slots[pn % self._size] != pn

    def mark(self, pn: int) -> None:
        self._slots[pn % self._size] = pn
        if pn > self.highest:
            self.highest = pn


class RetryTokens:
    """Stateless address-validation tokens: the listener keeps only its secret.

    A token binds the client's address and connection ID to the time it was issued; the MAC is
    HMAC-SHA256 truncated to 128 bits.
    """

    __slots__ = ("_lifetime_s", "_secret")

    def __init__(self, secret: bytes, lifetime_s: float) -> None:
        self._secret = secret
        self._lifetime_s = lifetime_s

    def _mac(self, addr: tuple[str, int], client_cid: bytes, issued: bytes) -> bytes:
        msg = f"{addr[0]}|{addr[1]}|".encode() + client_cid + issued
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:TOKEN_MAC_BYTES]

    def issue(self, addr: tuple[str, int], client_cid: bytes, now: float) -> bytes:
        issued = _TOKEN_TIME.pack(max(0, int(now * 1000)))
        return issued + self._mac(addr, client_cid, issued)

    def validate(self, token: bytes, addr: tuple[str, int], client_cid: bytes, now: float) -> bool:
        if len(token) != _TOKEN_TIME.size + TOKEN_MAC_BYTES:
            return False
        issued = token[: _TOKEN_TIME.size]
        if not hmac.compare_digest(token[_TOKEN_TIME.size :], self._mac(addr, client_cid, issued)):
            return False
        issued_ms: int = _TOKEN_TIME.unpack(issued)[0]
        age_s = now - issued_ms / 1000
        return -1.0 <= age_s <= self._lifetime_s
