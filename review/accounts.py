"""Create accounts and set passwords from the command line (the first admin is made this way).

Usage::

    python -m review.accounts add USERNAME [--role admin|rater] [--db PATH]   # asks for the password
    python -m review.accounts password USERNAME [--db PATH]
    python -m review.accounts list [--db PATH]

The password is read from the terminal, or from the first line of standard input when that is not
a terminal (``echo "$PASSWORD" | python -m review.accounts add alice --role admin``).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from database import raters as rater_store
from database.connection import open_db
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
    return parser.parse_args(argv)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise studies.ReviewError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    # The door's configuration (flags, then environment): read by this entry point only, so the
    # room's functions never depend on the app above them.
    from appconfig import default_db_path
    args = _parse_args(argv)

    db = open_db(args.db or default_db_path())
    try:
        if args.command == "list":
            for row in rater_store.list_raters(db):
                print(f"{row['username']}\t{row['role']}\t{'password' if row['password_hash'] else 'invitation only'}")
        elif args.command == "add":
            studies.create_account(db, args.username, args.role, _read_password())
            print(f"created {args.role} {args.username}")
        else:
            studies.set_password(db, args.username, _read_password())
            print(f"password set for {args.username}")
    except (studies.ReviewError, WeakPassword, DuplicateName) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
