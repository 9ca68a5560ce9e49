"""Subscription secrets and the Standard Webhooks headers of a delivery.

`webhook-signature` is `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, made with the `standardwebhooks`
package itself, so that what a receiver verifies with any Standard Webhooks library is what was signed. During a
rotation's grace period both the new and the old secret sign, space-separated: a receiver holding either
verifies.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

PREFIX = "whsec_"
# Standard Webhooks: secrets of 24 to 64 bytes; ours are 32.
MIN_KEY_BYTES, MAX_KEY_BYTES, NEW_KEY_BYTES = 24, 64, 32
ROTATION_GRACE_SECONDS = 24 * 3600  # the old secret still signs this long after a rotation


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(NEW_KEY_BYTES)).decode()


def secret_problem(value: str) -> str | None:
    """What is wrong with a secret a client chose, or None."""
    if not value.startswith(PREFIX):
        return "must be whsec_ followed by base64"
    encoded = value.removeprefix(PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "must be whsec_ followed by base64"
    if base64.b64encode(key).decode() != encoded:  # stray padding the decoder would skip: not one secret, several
        return "must be whsec_ followed by base64 (padded, nothing after the padding)"
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return f"must hold {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes (base64 after whsec_)"
    return None


@functools.lru_cache(maxsize=256)
def _signer(secret: str) -> Webhook:
    """One signer per secret, kept: making one decodes the secret, a tenth of the cost of signing a body."""
    return Webhook(secret)


def headers(webhook_id: str, at: datetime, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt, signed with each secret (newest first)."""
    at = at.astimezone(UTC)
    text = body.decode()
    signatures = " ".join(_signer(secret).sign(webhook_id, at, text) for secret in secrets)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }
