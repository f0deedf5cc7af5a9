"""The review rules: accounts, study creation and opening, next trial, submitting a rating.

Every function that acts for a person takes that person's session token and checks it here,
server side: a rater reaches only their own trials, never another rater's answers, never admin
functions, whatever the browser sends. Errors a person can fix are ``ReviewError``s with a
message saying what to do. (About 490 lines: every rule here starts from the same session check
and the same errors, and keeping them in one module keeps that check in one place.)
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlite_utils

from common.spreadsheet import neutralise_row
from database import raters as rater_store
from database import ratings as rating_store
from database import studies as study_store
from database.connection import ConnectionPool
from review import auth

logger = logging.getLogger(__name__)

ARTIFACTS: tuple[str, ...] = ("colour", "texture", "vessels", "specular highlights", "anatomy", "border")
PATHOLOGY_CALLS: tuple[str, ...] = ("AD", "NonAD", "cannot tell")
MASK_FIT: tuple[str, ...] = ("fits", "partly", "does not fit")
MAX_COMMENT = 2000


class ReviewError(ValueError):
    """Something a rater or admin asked for that cannot be done; the message says why."""


class NotSignedIn(ReviewError):
    """No valid session: never signed in, signed out, or the session expired."""


class Forbidden(ReviewError):
    """Signed in, but not allowed to do this (e.g. a rater calling an admin function)."""


class MissingAnswers(ReviewError):
    """A rating without some of its required answers; ``names`` lists every one left out."""

    def __init__(self, names: list[str], message: str):
        self.names = tuple(names)
        super().__init__(message)


@dataclass(frozen=True)
class Account:
    """Who a session belongs to (no password hash)."""

    id: int
    username: str
    role: str
    needs_profile: bool
    simulated: bool


@dataclass(frozen=True)
class TrialView:
    """What a rater's browser may know about a trial: nothing about sources, labels or checkpoints."""

    study_id: int
    trial_id: int
    position: int  # 1-based
    total: int
    mode: str
    image_paths: tuple[str, ...]  # presented files, named by random token
    ask_mask_fit: bool = False  # the image shows a polyp mask's outline: does it fit the lesion?
    upcoming: tuple[str, ...] = ()  # presented files of the trial after this one (the browser preloads them)
    masks_shown: bool = False  # the study outlines masks (asked on every trial but its attention checks)


# ---------------------------------------------------------------------------------------------
# Accounts


def create_account(db: sqlite_utils.Database, username: str, role: str = "rater",
                   password: str | None = None, simulated: bool = False) -> int:
    """Create a rater or admin account; a password is optional for raters (invitation links)."""
    username = _clean_username(username)
    if role not in ("rater", "admin"):
        raise ReviewError(f"role must be rater or admin, got {role!r}")
    if role == "admin" and not password:
        raise ReviewError("an admin account needs a password")
    hashed = auth.hash_password(password) if password else None
    return rater_store.create_rater(db, username, role, hashed, simulated)


def set_password(db: sqlite_utils.Database, username: str, password: str) -> None:
    rater = rater_store.get_rater_by_username(db, _clean_username(username))
    if rater is None:
        raise ReviewError(f"no account named {username!r}")
    rater_store.set_password_hash(db, rater["id"], auth.hash_password(password))


def sign_in(db: sqlite_utils.Database, username: str, password: str, client: str | None = None) -> str:
    """Check credentials and return a new session token.

    Failed attempts are counted per user name and per ``client`` (the caller's address): past a
    few, each try waits longer (``auth.throttle_delay``). An unknown name costs the same scrypt
    work and gets the same answers as a known one.

    Raises:
        NotSignedIn: For an unknown user or a wrong password (the same message for both), or while
            the name or client must wait.
    """
    name = (username or "").strip()
    keys = {"user": f"user:{name.casefold()[:200]}", **({"client": f"client:{client[:200]}"} if client else {})}
    refuse_if_throttled(db, keys)
    rater = rater_store.get_rater_by_username(db, name)
    if not auth.verify_password(password or "", rater["password_hash"] if rater else None):
        rater_store.record_sign_in_failure(db, list(keys.values()))
        raise NotSignedIn(BAD_CREDENTIALS)
    rater_store.clear_sign_in_failures(db, list(keys.values()))
    return _new_session(db, rater["id"])


BAD_CREDENTIALS = "unknown username or wrong password"


def refuse_if_throttled(db: sqlite_utils.Database, keys: dict[str, str]) -> None:
    """Refuse a caller whose failed sign-ins (per ``keys``: user, client) still require a wait.

    Raises:
        NotSignedIn: Saying how long to wait, the same message whoever is throttled.
    """
    kinds = {key: kind for kind, key in keys.items()}
    waits = [auth.throttle_wait(kinds[row["key"]], row["failures"], row["last_failure_at"])
             for row in rater_store.sign_in_failures(db, list(keys.values()))]
    wait = max(waits, default=0.0)
    if wait > 0:
        raise NotSignedIn(f"too many failed sign-ins: try again in {math.ceil(wait)} s")


def redeem_invitation(db: sqlite_utils.Database, invitation: str) -> tuple[str, int]:
    """Sign in with an invitation link's token, once; returns (session token, study id).

    The session ends when the invitation would have expired, if that comes first.

    Raises:
        NotSignedIn: For a token that was never issued (forged, mistyped), was already used,
            was replaced by a newer one, or has expired (one message for all).
    """
    token = auth.new_token()
    row = rater_store.redeem_invitation(db, auth.token_hash(invitation or ""), auth.token_hash(token),
                                        auth.expiry(auth.SESSION_DAYS))
    if row is None:
        # Only the holder of a real link (192 random bits) learns that it expired.
        known = rater_store.get_invitation(db, auth.token_hash(invitation or ""))
        if known and known["redeemed_at"] is None and known["revoked_at"] is None:
            raise NotSignedIn(f"this invitation link expired on {known['expires_at'][:10]}; "
                              "ask the study's organiser for a new one")
        raise NotSignedIn("this invitation link is not valid (each link signs in once): check that it was "
                          "copied whole, or ask the study's organiser for a new one")
    return token, row["study_id"]


def account(db: sqlite_utils.Database, session: str | None) -> Account:
    """The account a live session token belongs to; using it restarts the session's idle clock.

    Raises:
        NotSignedIn: If the token is missing, unknown, revoked, idle too long or expired.
    """
    hashed = auth.token_hash(session) if isinstance(session, str) and session else None
    rater = rater_store.session_rater(db, hashed, auth.idle_cutoff()) if hashed else None
    if rater is None:
        raise NotSignedIn("please sign in (your session is missing or has expired)")
    if auth.needs_touch(rater["session_seen_at"]):
        rater_store.touch_session(db, hashed)
    return Account(rater["id"], rater["username"], rater["role"], rater["profile_at"] is None,
                   bool(rater["simulated"]))


def sign_out(db: sqlite_utils.Database, session: str | None) -> None:
    """End a session on the server (nothing happens for an unknown or ended one)."""
    if isinstance(session, str) and session:
        rater_store.revoke_session(db, auth.token_hash(session))


def revoke(db: sqlite_utils.Database, username: str) -> tuple[int, int]:
    """End every session of an account and withdraw its unused invitations; returns (sessions, invitations).

    For trusted callers (the command line, or ``revoke_as_admin``).
    """
    rater = rater_store.get_rater_by_username(db, _clean_username(username))
    if rater is None:
        raise ReviewError(f"no account named {username!r}")
    return rater_store.revoke_rater(db, rater["id"])


def revoke_as_admin(db: sqlite_utils.Database, session: str, username: str) -> tuple[int, int]:
    """``revoke`` for an admin in the app."""
    require_admin(db, session)
    return revoke(db, username)


def require_admin(db: sqlite_utils.Database, session: str | None) -> Account:
    """The admin behind a session. Raises Forbidden for a rater."""
    who = account(db, session)
    if who.role != "admin":
        raise Forbidden("this needs an admin account")
    return who


def save_profile(db: sqlite_utils.Database, session: str, specialty: str, years: int | float | None,
                 colonoscopies: str) -> None:
    """Store the rater's specialty, years of practice and approximate colonoscopies performed."""
    who = account(db, session)
    if not specialty or len(specialty) > 100:
        raise ReviewError("specialty is required (at most 100 characters)")
    if years is None or not 0 <= float(years) <= 70 or float(years) != int(years):
        raise ReviewError(f"years of practice must be a whole number from 0 to 70, got {years!r}")
    if colonoscopies not in COLONOSCOPY_BANDS:
        raise ReviewError(f"colonoscopies must be one of {', '.join(COLONOSCOPY_BANDS)}, got {colonoscopies!r}")
    rater_store.set_profile(db, who.id, specialty.strip(), int(years), colonoscopies)


COLONOSCOPY_BANDS: tuple[str, ...] = ("none", "<100", "100-500", "500-1000", "1000-5000", ">5000")


def _new_session(db: sqlite_utils.Database, rater_id: int) -> str:
    token = auth.new_token()
    rater_store.add_session(db, auth.token_hash(token), rater_id, auth.expiry(auth.SESSION_DAYS))
    return token


def _clean_username(username: str) -> str:
    name = (username or "").strip()
    if not 1 <= len(name) <= 64 or any(ch.isspace() or ch in "<>\"'&" for ch in name):
        raise ReviewError(f"username must be 1-64 characters without spaces or <>\"'&, got {username!r}")
    return name


# ---------------------------------------------------------------------------------------------
# Rating


def rater_studies(db: sqlite_utils.Database, session: str) -> list[dict]:
    """The open studies a rater is in, with their progress."""
    who = account(db, session)
    rows = []
    for study in study_store.studies_for_rater(db, who.id):
        rated, total = study_store.rater_progress(db, study["id"], who.id)
        rows.append({"id": study["id"], "name": study["name"], "status": study["status"],
                     "mode": study["mode"], "rated": rated, "total": total})
    return rows


def next_item(db: sqlite_utils.Database, session: str, study_id: int) -> TrialView | None:
    """The rater's next unrated trial (starting its response clock), or None when finished.

    Raises:
        NotSignedIn, Forbidden: Without a session, or for a study the rater is not in.
        ReviewError: If the study is not open.
    """
    who, study = _rater_study(db, session, study_id)
    with db.atomic():
        view = _show_next(db, study, who.id, rating_store.unrated_trials(db, study["id"], who.id, 2))
    return _loadable(view)


def submit(db: sqlite_utils.Database, session: str, study_id: int, trial_id: int, answers: dict,
           key: str, *, response_ms: int | None = None) -> bool:
    """Store a rater's answers to one of their trials, once.

    Args:
        answers: Single mode: real_or_synthetic, source_confidence, realism, pathology,
            pathology_confidence, optional artifacts and comment. Pair mode: synthetic_choice,
            choice_confidence, pathology_left, pathology_right.
        key: The client's idempotency key for this submit (one per trial shown).
        response_ms: Simulated accounts only (``review.simulate``): the response time to store
            instead of the one measured from sending the trial. A real rater's time is always
            measured by the server.

    Returns:
        True if stored now, False if this trial already had a rating (repeated submit).

    Raises:
        Forbidden: If the trial is not this rater's (or not in this study), if it is not the trial
            shown last (``next_item``), or ``response_ms`` is given for a real account.
        ReviewError: If an answer is missing or outside its allowed values.
    """
    who, study = _rater_study(db, session, study_id)
    with db.atomic():
        return _store(db, who, study, trial_id, answers, key, response_ms)[0]


def submit_and_next(db: sqlite_utils.Database, session: str, study_id: int, trial_id: int, answers: dict,
                    key: str, *, response_ms: int | None = None) -> tuple[bool, TrialView | None]:
    """``submit`` then ``next_item`` in one transaction: one session check, one commit.

    What the Rate tab's submit does: the rating is committed (durable) before the reply leaves,
    and the next trial's response clock starts in the same commit.

    Returns:
        (stored now, as ``submit``; the next trial, or None when the rater has finished).

    Raises:
        The errors of ``submit`` (nothing is stored) and ``next_item`` (the rating is kept).
    """
    return _loadable_reply(_submit_and_show(db, session, study_id, trial_id, answers, key, response_ms))


def submit_and_next_shared(pool: ConnectionPool, session: str, study_id: int, trial_id: int, answers: dict,
                           key: str) -> tuple[bool, TrialView | None]:
    """``submit_and_next`` through ``pool.write``: submits of raters waiting at the same moment share one commit.

    What the served Rate tab calls. Acknowledged (returned) only once committed; errors as ``submit_and_next``.
    """
    return _loadable_reply(pool.write(lambda db: _submit_and_show(db, session, study_id, trial_id, answers, key, None)))


def _submit_and_show(db, session, study_id, trial_id, answers, key, response_ms) -> tuple[bool, TrialView | None]:
    who, study = _rater_study(db, session, study_id)
    with db.atomic():
        stored, unrated = _store(db, who, study, trial_id, answers, key, response_ms)
        view = _show_next(db, study, who.id, unrated)
    return stored, view


def _loadable_reply(reply: tuple[bool, TrialView | None]) -> tuple[bool, TrialView | None]:
    stored, view = reply
    return stored, _loadable(view)


def _show_next(db: sqlite_utils.Database, study: dict, rater_id: int, trials: list[dict]) -> TrialView | None:
    """The first of ``trials`` (the rater's unrated ones, in order) as a view, its clock started; inside ``db.atomic()``."""
    if not trials:
        return None
    trial = trials[0]
    study_store.mark_shown(db, trial["id"])
    rated, total = study_store.rater_progress(db, study["id"], rater_id)
    masks = bool(study["design"].get("show_masks"))
    upcoming = _paths(trials[1]) if len(trials) > 1 else ()
    return TrialView(study["id"], trial["id"], rated + 1, total, study["mode"], _paths(trial),
                     masks and trial["kind"] != "attention", upcoming, masks)


def _loadable(view: TrialView | None) -> TrialView | None:
    """``view`` once its presented files are known to exist (checked after the commit, which they do not undo)."""
    for path in view.image_paths if view else ():
        if not Path(path).is_file():
            logger.error("presented image of study %s trial %s is missing: %s", view.study_id, view.trial_id, path)
            raise ReviewError("an image of this trial could not be loaded; the organiser has been "
                              "told in the server log; please try again later")
    return view


def _paths(trial: dict) -> tuple[str, ...]:
    return (trial["left_path"],) if trial["right_path"] is None else (trial["left_path"], trial["right_path"])


def _store(db: sqlite_utils.Database, who: Account, study: dict, trial_id: int, answers: dict, key: str,
           response_ms: int | None) -> tuple[bool, list[dict]]:
    """``submit``'s checks and its one INSERT, inside ``db.atomic()``; returns (stored, the unrated trials after it).

    A trial may be rated only while it is the one ``next_item`` showed last: the rater's first
    unrated trial, already shown. A trial already rated gets the repeated-submit answer.
    """
    unrated = rating_store.unrated_trials(db, study["id"], who.id, 3)
    if unrated and unrated[0]["id"] == int(trial_id):
        trial = unrated[0]
        if trial["shown_at"] is None:
            raise Forbidden(NOT_SHOWN)
    else:
        trial = study_store.get_trial(db, int(trial_id))
        if trial is None or trial["rater_id"] != who.id or trial["study_id"] != study["id"]:
            raise Forbidden("this trial is not in your schedule")
        if trial["rating_id"] is None:
            raise Forbidden(NOT_SHOWN)
    if not isinstance(key, str) or not 8 <= len(key) <= 128:
        raise ReviewError("submit key must be 8-128 characters")
    clean = validate_answers(study["mode"], answers,
                             mask_fit=bool(study["design"].get("show_masks")) and trial["kind"] != "attention")
    clean["response_ms"] = _response_ms(trial["shown_at"])
    if response_ms is not None:
        if not who.simulated:
            raise Forbidden("only a simulated rater's response time may be given; a real one is measured")
        if isinstance(response_ms, bool) or not isinstance(response_ms, int) or response_ms < 0:
            raise ReviewError(f"response_ms must be a non-negative integer, got {response_ms!r}")
        clean["response_ms"] = response_ms
    stored, existing = rating_store.insert_rating(db, trial["id"], who.id, key, clean)
    if not stored and existing["trial_id"] != trial["id"]:
        raise ReviewError("this submit key was already used for another trial")
    return stored, unrated[1:] if stored else unrated


NOT_SHOWN = "this is not the image you are being shown now: press Start / resume"


def validate_answers(mode: str, answers: dict, mask_fit: bool = False) -> dict:
    """Check a rating's answers against the mode's questions; returns the cleaned answers.

    ``mask_fit``: the trial showed a mask outline, so ``mask_fit`` (one of ``MASK_FIT``) is required.
    """
    if mode == "single":
        required = {"real_or_synthetic": ("real", "synthetic"), "pathology": PATHOLOGY_CALLS}
        scales = ("source_confidence", "realism", "pathology_confidence")
    else:
        required = {"synthetic_choice": ("left", "right"), "pathology_left": PATHOLOGY_CALLS,
                    "pathology_right": PATHOLOGY_CALLS}
        scales = ("choice_confidence",)
    asked = {**required, **dict.fromkeys(scales, ("1", "2", "3", "4", "5")), **({"mask_fit": MASK_FIT} if mask_fit else {})}
    missing = [name for name in asked if answers.get(name) in (None, "")]
    if missing:  # every one named at once
        raise MissingAnswers(missing, "unanswered: " + "; ".join(
            f"{_question(name)}: choose one of {', '.join(asked[name])}" for name in missing))
    clean: dict = {}
    for name, allowed in required.items():
        if answers.get(name) not in allowed:
            raise ReviewError(f"{_question(name)}: choose one of {', '.join(allowed)} (got {answers.get(name)!r})")
        clean[name] = answers[name]
    for name in scales:
        value = answers.get(name)
        if value is None or str(value) not in {"1", "2", "3", "4", "5"}:
            raise ReviewError(f"{_question(name)}: choose 1 to 5 (got {value!r})")
        clean[name] = int(value)
    artifacts = answers.get("artifacts") or []
    unknown = sorted(set(artifacts) - set(ARTIFACTS))
    if unknown:
        raise ReviewError(f"artifacts: unknown {unknown}; allowed {', '.join(ARTIFACTS)}")
    comment = answers.get("comment") or ""
    if len(comment) > MAX_COMMENT:
        raise ReviewError(f"comment: at most {MAX_COMMENT} characters, got {len(comment)}")
    clean.update(artifacts=sorted(set(artifacts)), comment=comment)
    if mask_fit:
        if answers.get("mask_fit") not in MASK_FIT:
            raise ReviewError(f"{_question('mask_fit')}: choose one of {', '.join(MASK_FIT)} (got {answers.get('mask_fit')!r})")
        clean["mask_fit"] = answers["mask_fit"]
    return clean


def personal_summary(db: sqlite_utils.Database, session: str, study_id: int) -> dict:
    """After the last trial only: how often the rater spotted synthetic images and called pathology right."""
    who, study = _rater_study(db, session, study_id, allow_closed=True)
    rated, total = study_store.rater_progress(db, study_id, who.id)
    if rated < total:
        raise ReviewError(f"the summary is shown after the last image ({rated} of {total} rated)")
    rows = [row for row in rating_store.rater_ratings(db, study_id, who.id) if row["kind"] == "normal"]
    if study["mode"] == "single":
        correct = sum(row["real_or_synthetic"] == row["left_role"] for row in rows)
        called = [row for row in rows if row["pathology"] != "cannot tell"]
        path_ok = sum(row["pathology"] == row["left_label"] for row in called)
    else:
        correct = sum(row["synthetic_choice"] == row["synthetic_side"] for row in rows)
        called = [(row["pathology_left"], row["left_label"]) for row in rows if row["pathology_left"] != "cannot tell"]
        called += [(row["pathology_right"], row["right_label"]) for row in rows if row["pathology_right"] != "cannot tell"]
        path_ok = sum(call == truth for call, truth in called)
    return {"trials": len(rows), "source_correct": correct, "pathology_called": len(called),
            "pathology_correct": path_ok}


def _rater_study(db, session, study_id, allow_closed: bool = False) -> tuple[Account, dict]:
    who = account(db, session)
    study = study_store.get_study(db, int(study_id))
    if study is None or not study_store.is_study_rater(db, study["id"], who.id):
        raise Forbidden("you are not a rater in this study")
    if study["status"] != "open" and not (allow_closed and study["status"] == "closed"):
        raise ReviewError(f"study {study['name']!r} is {study['status']}; rating is possible while it is open")
    return who, study


def _response_ms(shown_at: str | None) -> int | None:
    if shown_at is None:
        return None
    shown = datetime.fromisoformat(shown_at.replace("Z", "+00:00"))
    return max(0, int((auth.now_utc() - shown).total_seconds() * 1000))


def _question(name: str) -> str:
    return name.replace("_", " ")


# ---------------------------------------------------------------------------------------------
# Export


def export_csv(db: sqlite_utils.Database, session: str, study_id: int) -> str:
    """All ratings of a study as tidy CSV text (admin only); columns in docs/review-export.md."""
    require_admin(db, session)
    if study_store.get_study(db, int(study_id)) is None:
        raise ReviewError(f"no study with id {study_id}")
    rows = rating_store.export_rows(db, int(study_id))
    out = io.StringIO()
    # RFC 4180 line ends: a carriage return inside a comment is then quoted too, not a new row.
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    # Comments, specialty, user and study names, prompts are typed by people: no cell may run as a
    # formula. The image token is the server's random [A-Za-z0-9_-] name and is kept as it is.
    writer.writerows({**neutralise_row(row), "image_token": row["image_token"]} for row in rows)
    return out.getvalue()


EXPORT_COLUMNS: tuple[str, ...] = (
    "study_id", "study_name", "mode", "study_simulated", "rater", "rater_specialty",
    "rater_years_practice", "rater_colonoscopies", "rater_simulated", "trial_id", "position",
    "trial_kind", "repeat_of", "side", "synthetic_side", "image_sha256", "image_source",
    "image_label", "image_token", "checkpoint_id", "checkpoint_name", "checkpoint_step",
    "checkpoint_stage", "checkpoint_fingerprint", "prompt", "negative_prompt", "seed", "scheduler",
    "steps", "guidance", "rating_id", "real_or_synthetic", "source_confidence", "realism",
    "pathology", "pathology_confidence", "synthetic_choice", "choice_confidence",
    "pathology_left", "pathology_right", "artifacts", "mask_fit", "comment", "response_ms", "submitted_at",
)

