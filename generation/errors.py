"""The generation room's user errors, and its command lines' wrapper around ``common.cli.run_cli``."""

from __future__ import annotations

import argparse
import logging
from typing import Callable

from common import cli
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
    return cli.run_cli(lambda: main(args), USER_ERRORS)
