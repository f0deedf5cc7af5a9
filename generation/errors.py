"""How command-line entry points report domain errors: one line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from common.device import DeviceUnavailable
from common.labels import UnknownLabel
from generation.checkpoints import CheckpointNotFound, NotACheckpoint
from generation.datasets import DatasetError
from generation.pipelines import CheckpointLoadError
from generation.prompts import PromptTemplateError
from generation.sampling import InvalidSetting
from generation.text_encoder import TextEncoderMissing

USER_ERRORS = (
    CheckpointNotFound, NotACheckpoint, CheckpointLoadError, TextEncoderMissing, PromptTemplateError, DatasetError,
    DeviceUnavailable, UnknownLabel, InvalidSetting,
)
"""Errors caused by the user's input or data; anything else is a bug and keeps its traceback."""


def run_cli(
    parse_args: Callable[[list[str] | None], argparse.Namespace],
    main: Callable[[argparse.Namespace], int],
    argv: list[str] | None = None,
) -> int:
    """Parse ``argv`` and run ``main``; a user error becomes ``error: <message>`` on stderr, exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        return main(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
