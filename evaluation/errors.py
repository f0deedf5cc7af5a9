"""The evaluation room's user errors: what its tabs show as a message rather than as a traceback."""

from __future__ import annotations

from evaluation.cache import CacheError
from evaluation.features import ExtractorUnavailable
from evaluation.images import ImageSetError
from evaluation.scorecard import NothingToEvaluate
from evaluation.segmentation.settings import SegmentationError
from evaluation.study.outcomes import AnalysisError
from generation.masks.files import MaskError

USER_ERRORS = (NothingToEvaluate, ExtractorUnavailable, ImageSetError, CacheError, AnalysisError, SegmentationError,
               MaskError)
"""Errors caused by the user's input or data in the Evaluate and Analysis tabs; anything else is a bug."""
