"""The training command line, a door: ``python -m generation.train`` with the evaluation room's validation wired in.

``generation.train`` cannot import ``evaluation`` (imports point down), so its ``cli`` hands over
to ``train`` here, which builds ``evaluation.validation.TrainingValidator`` (extractor from
``--val-extractor``, database from ``--db``, else the app's default) and passes it as the trainer's
``validate`` callback. Metric results go to the study database by default, so the Evaluate tab plots
them over the training steps; they are also written into each checkpoint's ``polypturing.json``.
"""

from __future__ import annotations

import argparse

from appconfig import default_db_path
from common.cli import refuse
from evaluation.validation import TrainingValidator
from generation import train as training
from generation.errors import run_cli


def validator_for(args: argparse.Namespace) -> TrainingValidator | None:
    """The validation callback the flags ask for; None with ``--no-validation``.

    Raises:
        ValueError: If ``--val-extractor`` is not a known extractor.
    """
    if not args.validation:
        return None
    return TrainingValidator(args.val_extractor, args.db or default_db_path())


def train(argv: list[str] | None = None) -> int:
    """``python -m generation.train``: parse ``argv``, train with validation; user errors exit with status 2."""
    def command(args: argparse.Namespace) -> int:
        try:
            validate = validator_for(args)
        except ValueError as error:  # an unknown --val-extractor
            return refuse(str(error))
        return training.main(args, validate)

    return run_cli(training.parse_args, command, argv)
