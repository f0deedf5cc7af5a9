"""The first run: a one-time setup token, printed on the server's console, that lets its holder create the admin.

While the database holds no (real) admin, the server draws a random token at start (``FirstRun.draw``)
and prints ``http://HOST:PORT/?setup=TOKEN``, as Jupyter prints its token. Whoever opens that link
may create the first admin account in the browser; nobody else can, so a stranger on the network
cannot race the owner to it. The token:

- is random (``secrets``, 192 bits) and lives only in the server's memory, as its sha256 (never in
  the database, never in the browser's storage: the page keeps it in server-side state and removes
  it from the address bar once read);
- is compared in constant time (``hmac.compare_digest`` of the digests);
- is good once: it is spent when the admin is created, and it stops working as soon as any real
  admin exists (one made with ``python -m review.accounts`` included);
- is throttled like sign-in: wrong tokens count as failed sign-ins of the caller's address.

Simulated admins (``sim-admin``, made by the demo's simulated panel, with a random password nobody
knows) do not count as an admin here.
"""

from __future__ import annotations

import hmac
import threading

import sqlite_utils

from database import raters as rater_store
from review import auth, studies
from review.studies import NotSignedIn, ReviewError

QUERY_PARAMETER = "setup"
INVALID = ("this setup link is not valid: it works once, and only until the first admin exists. "
           "Use the link printed on the server's console when it started, or make an admin with "
           "python -m review.accounts add NAME --role admin")


def needs_admin(db: sqlite_utils.Database) -> bool:
    """Whether the database holds no real admin account (simulated admins do not count)."""
    return not any(row["role"] == "admin" and not row["simulated"] for row in rater_store.list_raters(db))


def setup_url(token: str, host: str, port: int, public_url: str | None = None) -> str:
    """The link to print: ``PUBLIC_URL/?setup=TOKEN``, else ``http://HOST:PORT/?setup=TOKEN`` (a wildcard host
    shown as the local address, where the console that prints it is)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = (public_url or f"http://{shown}:{port}").rstrip("/")
    return f"{base}/?{QUERY_PARAMETER}={token}"


class FirstRun:
    """The server's setup token: only its sha256 is kept, in memory, and it can be spent once.

    Thread-safe: two requests carrying the token at the same moment create one admin.
    """

    def __init__(self, token: str):
        self._digest = bytes.fromhex(auth.token_hash(token))
        self._spent = False
        self._lock = threading.Lock()

    @classmethod
    def draw(cls, db: sqlite_utils.Database) -> tuple[FirstRun, str] | None:
        """A new ``FirstRun`` and its token when the database has no admin yet; None otherwise."""
        if not needs_admin(db):
            return None
        token = auth.new_token()
        return cls(token), token

    def matches(self, token: object) -> bool:
        """Whether ``token`` is this unspent setup token (constant time in the token's content)."""
        candidate = bytes.fromhex(auth.token_hash(token if isinstance(token, str) else ""))
        return hmac.compare_digest(candidate, self._digest) and not self._spent

    def check(self, db: sqlite_utils.Database, token: object, client: str | None) -> None:
        """Refuse a token that does not open the setup page now; a wrong one counts as a failed sign-in.

        Raises:
            NotSignedIn: While the caller's address must wait, for a wrong or spent token, or once
                a real admin exists (one message for all, ``INVALID``).
        """
        keys = _client_keys(client)
        studies.refuse_if_throttled(db, keys)  # sign-in's own throttle: the same rule and message
        if not self.matches(token):
            rater_store.record_sign_in_failure(db, list(keys.values()))
            raise NotSignedIn(INVALID)
        if not needs_admin(db):
            raise NotSignedIn(INVALID)

    def create_admin(self, db: sqlite_utils.Database, token: object, username: str, password: str,
                     again: str, client: str | None = None) -> str:
        """Create the first admin with the setup token, spend the token, and return the admin's new session.

        Args:
            db: The study database.
            token: The setup token the page was opened with.
            username: The admin's user name (1-64 characters, no spaces or ``<>"'&``).
            password: At least ``auth.MIN_PASSWORD`` characters.
            again: The password typed a second time.
            client: The caller's address, for throttling.

        Raises:
            NotSignedIn: For a token that is wrong, spent or too late (``check``).
            ReviewError: If the two passwords differ; a bad name (``studies.create_account``).
            WeakPassword: For a short password.
            DuplicateName: If the name is taken (by a rater account).
        """
        with self._lock:
            self.check(db, token, client)
            if password != again:
                raise ReviewError("the two passwords differ: type the same password in both boxes")
            studies.create_account(db, username, "admin", password)
            self._spent = True
        return studies.sign_in(db, username, password, client=client)

    @property
    def spent(self) -> bool:
        """Whether the admin was created with this token."""
        return self._spent


def _client_keys(client: str | None) -> dict[str, str]:
    """The throttling key of a caller: its address, shared with sign-in, so the two budgets add up."""
    return {"client": f"client:{(client or 'unknown')[:200]}"}

