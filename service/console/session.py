"""Sign-in for the console: a signed cookie that names an API key, never holds it, and a CSRF token bound to it.

The cookie carries the key's *name*, a fingerprint of its secret, a random nonce and when it was issued, signed
with HMAC-SHA256. Every request finds the key by name in the configuration as it is now: a key removed, given a
new secret or listed in DLR_API_KEYS_DISABLED loses the console at once, as it loses the API.

The signing key is derived from the service's own secrets (the API keys, the database URL, the subscription
key): every replica and worker of one deployment derives the same one, with nothing new to configure, and
changing any key signs every console session out. A visitor who has not signed in (or any visitor while the
API is open) has a session without a key: its nonce is what the login form's CSRF token is bound to.

CSRF: each form that changes something carries `csrf` = HMAC(signing key, nonce); a POST without the token
of the session its cookie holds is refused before anything is read or changed. Signing in starts a new nonce,
so a token seen before signing in is worth nothing after it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from starlette.responses import Response

from service.access import ApiKey
from service.config import Settings

COOKIE = "dlr_console"
PATH = "/console"
MAX_AGE = 12 * 3600  # a working day: after that, sign in again
_DOMAIN = b"dlr-tracker console session v1\x00"


@dataclass(frozen=True, slots=True)
class Session:
    key_name: str | None  # the signed-in key's name; None: not signed in
    fingerprint: str  # of that key's secret ("" when not signed in)
    nonce: str  # what the CSRF token is bound to
    issued: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Makes, signs and reads console sessions for one configuration."""

    def __init__(self, settings: Settings) -> None:
        digest = hashlib.sha256(_DOMAIN)
        for key in settings.api_keys:
            digest.update(f"{key.name}\x00{key.key.reveal()}\x00".encode())
        for secret in (settings.database_url, settings.subscription_key):
            digest.update(b"\x01" + (secret.reveal().encode() if secret is not None else b"") + b"\x00")
        self._key = digest.digest()

    def _mac(self, purpose: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"\x00" + data, hashlib.sha256).digest()

    def fingerprint(self, key: ApiKey) -> str:
        return _b64(self._mac(b"key", key.key.reveal().encode())[:12])

    def new(self, key: ApiKey | None, now: float) -> Session:
        fingerprint = self.fingerprint(key) if key is not None else ""
        return Session(key.name if key else None, fingerprint, _b64(secrets.token_bytes(16)), int(now))

    def encode(self, session: Session) -> str:
        payload = json.dumps(
            [session.key_name, session.fingerprint, session.nonce, session.issued], separators=(",", ":")
        ).encode()
        return f"{_b64(payload)}.{_b64(self._mac(b'cookie', payload))}"

    def decode(self, value: str | None, now: float) -> Session | None:
        """The session a cookie holds, or None when it is absent, forged, malformed or too old."""
        if not value or len(value) > 1000:
            return None
        payload_text, _, signature = value.partition(".")
        try:
            payload, given = _unb64(payload_text), _unb64(signature)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac(b"cookie", payload)):
            return None
        try:
            key_name, fingerprint, nonce, issued = json.loads(payload)
        except (ValueError, TypeError):
            return None
        if not (isinstance(issued, int) and 0 <= now - issued < MAX_AGE):
            return None
        return Session(key_name, fingerprint, nonce, issued)

    def key_of(self, session: Session, settings: Settings) -> ApiKey | None:
        """The configured key the session was signed in with, if it is still configured with the same secret."""
        for key in settings.api_keys:
            if key.name == session.key_name and hmac.compare_digest(self.fingerprint(key), session.fingerprint):
                return key
        return None

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac(b"csrf", session.nonce.encode())[:18])

    def csrf_ok(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def set_cookie(self, response: Response, session: Session, *, secure: bool) -> None:
        # HttpOnly: no script reads it. SameSite=Lax: a link pasted into a ticket still opens signed in, while
        # another site's form posts arrive without it (and every POST needs the CSRF token besides).
        response.set_cookie(
            COOKIE, self.encode(session), path=PATH, httponly=True, samesite="lax", secure=secure, max_age=MAX_AGE
        )
