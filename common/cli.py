"""How every command line reports a user's mistake: one ``error:`` line on stderr and exit status 2.

Anything else is a bug and keeps its traceback. Each room names its own user errors (for example
``generation.errors.USER_ERRORS``) and passes them in.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def refuse(message: str) -> int:
    """Print ``error: <message>`` on stderr and return exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_cli(command: Callable[[], int], errors: tuple[type[BaseException], ...], prefix: str = "") -> int:
    """Run ``command()`` and return its exit status; one of ``errors`` becomes ``refuse(prefix + message)``.

    Args:
        command: The work of the command line, returning its exit status.
        errors: The exception types that mean the user's input or data was wrong.
        prefix: Put before the error's message (e.g. ``"cannot open database 'x': "``).
    """
    try:
        return command()
    except errors as error:
        return refuse(f"{prefix}{error}")
