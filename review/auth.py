"""Passwords and tokens for raters: hashing with the standard library's scrypt, random tokens, throttling.

Only hashes are stored: a session or invitation token is kept as its sha256, a password as an
scrypt hash with its own salt and parameters, so a copy of the database signs nobody in.

Sessions end on sign-out or revoke, after ``SESSION_IDLE_HOURS`` without use and ``SESSION_DAYS``
after sign-in. Failed sign-ins are counted per user name and per client: past a few free
failures each further attempt waits ``throttle_delay`` seconds, doubling every time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from common.clock import now_utc, stamp

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 8
TOKEN_BYTES = 24
SESSION_DAYS = 14
SESSION_IDLE_HOURS = 72
SESSION_TOUCH_SECONDS = 60  # a session's last use is written at most this often (no write per request)
INVITATION_DAYS = 30
FREE_FAILURES = {"user": 3, "client": 10}  # a client may be a clinic's shared address
MAX_DELAY_S = 900
# Checked for an unknown user (or one with no password), so that answers take as long as for a known one.
DUMMY_HASH = ("scrypt$16384$8$1$3zYQYaRzbz4Av6ZKaQhRUg$"
              "C7rAf0R-05f7O6I_fnF5yM4Jlx9AqVwo0n-tBijxQChUl-R7FS-oAL4nvK3Xry37A0HmlBvogCEDIBQRfeJjsA")


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
    """Whether ``password`` matches the stored hash (constant-time; False for no hash, after the same work)."""
    if not isinstance(password, str):
        password = ""
    if not stored:
        _check(password, DUMMY_HASH)
        return False
    return _check(password, stored)


def _check(password: str, stored: str) -> bool:
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


def throttle_delay(kind: str, failures: int) -> float:
    """Seconds a ``kind`` ("user" or "client") key with ``failures`` failed sign-ins must wait after the last one."""
    over = failures - FREE_FAILURES[kind]
    return 0.0 if over < 0 else float(min(2 ** over, MAX_DELAY_S))


def throttle_wait(kind: str, failures: int, last_failure_at: str) -> float:
    """Seconds from now until a key may try again (0 when it may now)."""
    last = datetime.fromisoformat(last_failure_at.replace("Z", "+00:00"))
    return max(0.0, throttle_delay(kind, failures) - (now_utc() - last).total_seconds())


def idle_cutoff() -> str:
    """The stamp before which a session's last use makes it idle-expired."""
    return stamp(now_utc() - timedelta(hours=SESSION_IDLE_HOURS))


def needs_touch(seen_at: str) -> bool:
    """Whether a session last used at ``seen_at`` should have its use written now."""
    return seen_at < stamp(now_utc() - timedelta(seconds=SESSION_TOUCH_SECONDS))


def expiry(days: float) -> str:
    """The stamp ``days`` from now."""
    return stamp(now_utc() + timedelta(days=days))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
