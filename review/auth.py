"""Passwords and tokens for raters: hashing with the standard library's scrypt, random tokens.

Only hashes are stored: a session or invitation token is kept as its sha256, a password as an
scrypt hash with its own salt and parameters, so a copy of the database signs nobody in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 8
TOKEN_BYTES = 24
SESSION_DAYS = 30
INVITATION_DAYS = 30


class WeakPassword(ValueError):
    """A password shorter than ``MIN_PASSWORD`` characters."""


def hash_password(password: str) -> str:
    """An scrypt hash ``scrypt$n$r$p$salt$digest`` of ``password``.

    Raises:
        WeakPassword: If the password has fewer than ``MIN_PASSWORD`` characters.
    """
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise WeakPassword(f"password must have at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches the stored hash (constant-time; False for no hash)."""
    if not stored or not isinstance(password, str):
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate, _unb64(digest))


def new_token() -> str:
    """A random URL-safe token (192 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """How a token is stored and looked up: its sha256 in hex."""
    return hashlib.sha256(str(token).encode()).hexdigest()


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def stamp(moment: datetime) -> str:
    """The database's time format (ISO 8601, UTC, milliseconds, ``Z``)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def expiry(days: float) -> str:
    """The stamp ``days`` from now."""
    return stamp(now_utc() + timedelta(days=days))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
