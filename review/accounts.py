"""Create accounts and set passwords from the command line (the first admin is made this way).

Usage::

    python -m review.accounts add USERNAME [--role admin|rater] [--db PATH]   # asks for the password
    python -m review.accounts password USERNAME [--db PATH]
    python -m review.accounts list [--db PATH]
    python -m review.accounts revoke USERNAME [--db PATH]   # ends every session, withdraws unused invitations

The password is read from the terminal, or from the first line of standard input when that is not
a terminal (``echo "$PASSWORD" | python -m review.accounts add alice --role admin``).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from common.cli import run_cli
from database import raters as rater_store
from database.connection import connect
from database.raters import DuplicateName
from review import studies
from review.auth import WeakPassword


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m review.accounts", description="Manage PolypTuring rater and admin accounts.")
    parser.add_argument("--db", type=Path, help="study database (default: the app's, env POLYP_DB / POLYP_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create an account (asks for its password)")
    add.add_argument("username")
    add.add_argument("--role", choices=("rater", "admin"), default="rater")
    pwd = sub.add_parser("password", help="set an account's password")
    pwd.add_argument("username")
    sub.add_parser("list", help="list accounts")
    revoke = sub.add_parser("revoke", help="end every session of an account and withdraw its unused invitations")
    revoke.add_argument("username")
    return parser.parse_args(argv)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise studies.ReviewError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 done, 2 refused)."""
    # The door's configuration (flags, then environment): read by this entry point only, so the
    # room's functions never depend on the app above them.
    from appconfig import default_db_path

    args = _parse_args(argv)
    with connect(args.db or default_db_path()) as db:
        return run_cli(lambda: _command(db, args), (studies.ReviewError, WeakPassword, DuplicateName))


def _command(db, args: argparse.Namespace) -> int:
    if args.command == "list":
        for row in rater_store.list_raters(db):
            print(f"{row['username']}\t{row['role']}\t{'password' if row['password_hash'] else 'invitation only'}")
    elif args.command == "revoke":
        ended, withdrawn = studies.revoke(db, args.username)
        print(f"{args.username}: {ended} session(s) ended, {withdrawn} unused invitation(s) withdrawn")
    elif args.command == "add":
        studies.create_account(db, args.username, args.role, _read_password())
        print(f"created {args.role} {args.username}")
    else:
        studies.set_password(db, args.username, _read_password())
        print(f"password set for {args.username}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
