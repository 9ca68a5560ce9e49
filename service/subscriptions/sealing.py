"""Subscription secrets encrypted at rest, so that a database dump alone does not give them away.

With `DLR_SUBSCRIPTION_KEY` (32 random bytes, base64) every secret is stored as `aesgcm:` + base64(nonce +
AES-256-GCM ciphertext), the subscription id bound in as associated data (a sealed secret copied onto another
row does not open). Without the key, secrets are stored as `plain:` + the secret: the prefix says which, so
setting the key later leaves older rows readable (they are sealed when their secret is next rotated).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.config import Secret

SEALED = "aesgcm:"
PLAIN = "plain:"
_NONCE = 12


class SealError(ValueError):
    """A stored secret cannot be opened: the key is missing or is not the one that sealed it."""


def _key_bytes(text: str) -> bytes | None:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == 32 else None


def key_problem(text: str) -> str | None:
    """What is wrong with a DLR_SUBSCRIPTION_KEY value, or None."""
    if _key_bytes(text.strip()) is None:
        return "must be 32 random bytes in base64 (`openssl rand -base64 32` makes one)"
    return None


def seal(secret: str, subscription_id: int, key: Secret | None) -> str:
    if key is None:
        return PLAIN + secret
    raw = _key_bytes(key.reveal().strip())
    assert raw is not None  # Settings.from_env refused any other key
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(raw).encrypt(nonce, secret.encode(), str(subscription_id).encode())
    return SEALED + base64.b64encode(nonce + sealed).decode()


def unseal(stored: str, subscription_id: int, key: Secret | None) -> str:
    if stored.startswith(PLAIN):
        return stored.removeprefix(PLAIN)
    if not stored.startswith(SEALED):
        raise SealError("a stored secret in an unknown form")
    if key is None:
        raise SealError("the secret is encrypted and DLR_SUBSCRIPTION_KEY is not set")
    raw = _key_bytes(key.reveal().strip())
    assert raw is not None
    blob = base64.b64decode(stored.removeprefix(SEALED))
    try:
        return AESGCM(raw).decrypt(blob[:_NONCE], blob[_NONCE:], str(subscription_id).encode()).decode()
    except InvalidTag:
        raise SealError("the secret was encrypted with another DLR_SUBSCRIPTION_KEY") from None
