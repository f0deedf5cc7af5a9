"""A feature cache keyed by (image sha256, extractor name, preprocessing string).

Layout: ``root/<extractor>/<sha256(preprocessing)[:12]>/<sha256[:2]>/<sha256>.npy``, one small
float32 vector per file, plus ``preprocessing.txt`` beside the shards so a person can tell what a
folder holds. Files are written through ``common.files`` (a temporary name, then ``os.replace``), so a
reader never sees a half-written vector.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.files import atomic_path, write_atomic
from evaluation.features import FeatureExtractor, extract
from evaluation.images import LoadedImages

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class CacheError(ValueError):
    """A cache key or location is invalid."""


class FeatureCache:
    """A directory of cached feature vectors.

    Args:
        root: Cache folder; created on first write.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache: {str(root)!r} exists and is not a directory; allowed: a directory path")

    def path_for(self, sha256: str, extractor_name: str, preprocessing: str) -> Path:
        """The file that holds (or will hold) one vector.

        Raises:
            CacheError: If ``sha256`` is not 64 lower-case hex digits or the name has odd characters.
        """
        if not _SHA256.match(sha256):
            raise CacheError(f"sha256: {sha256!r} is not a sha256; allowed: 64 lower-case hex digits")
        if not _NAME.match(extractor_name):
            raise CacheError(f"extractor_name: {extractor_name!r}; allowed: letters, digits, '_', '.', '-'")
        return self._folder(extractor_name, preprocessing) / sha256[:2] / f"{sha256}.npy"

    def _folder(self, extractor_name: str, preprocessing: str) -> Path:
        digest = hashlib.sha256(preprocessing.encode("utf-8")).hexdigest()[:12]
        return self.root / extractor_name / digest

    def get(self, sha256: str, extractor_name: str, preprocessing: str, dim: int | None = None) -> np.ndarray | None:
        """Return the cached vector, or None if absent, unreadable or of the wrong length."""
        path = self.path_for(sha256, extractor_name, preprocessing)
        try:
            vector = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cache file %s (%s); recomputing", path, exc)
            return None
        if vector.ndim != 1 or (dim is not None and vector.shape[0] != dim):
            logger.warning("ignoring cache file %s of shape %s (expected (%s,)); recomputing", path, vector.shape, dim)
            return None
        return vector.astype(np.float32, copy=False)

    def put(self, sha256: str, extractor_name: str, preprocessing: str, vector: np.ndarray) -> None:
        """Store one vector atomically."""
        path = self.path_for(sha256, extractor_name, preprocessing)
        readme = self._folder(extractor_name, preprocessing) / "preprocessing.txt"
        if not readme.exists():
            write_atomic(readme, preprocessing.encode("utf-8") + b"\n")
        data = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        with atomic_path(path) as tmp:
            np.save(tmp, data, allow_pickle=False)


@dataclass
class FeatureResult:
    """Features of an image set, in input order, and how they were obtained.

    Attributes:
        features: float32 (N, d).
        computed: Distinct images whose features were computed now.
        cached: Distinct images whose features came from the cache.
    """

    features: np.ndarray
    computed: int
    cached: int


def features_for(loaded: LoadedImages, extractor: FeatureExtractor, cache: FeatureCache | None = None,
                 batch_size: int = 16, device: str | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> FeatureResult:
    """Features for a loaded image set, computing only those missing from the cache.

    Images with the same sha256 are computed once.

    Args:
        loaded: The image set.
        extractor: The feature extractor (its ``name`` and ``preprocessing`` form the key).
        cache: The cache, or None to compute everything.
        batch_size: Images per network call.
        device: Where to run the extractor; None keeps its device.
        on_progress: Called with (done, total) over the images being computed.

    Returns:
        The features in input order, with counts of computed and cached distinct images.
    """
    first_index: dict[str, int] = {}
    for i, sha in enumerate(loaded.sha256s):
        first_index.setdefault(sha, i)
    found: dict[str, np.ndarray] = {}
    if cache is not None:
        for sha in first_index:
            vector = cache.get(sha, extractor.name, extractor.preprocessing, extractor.num_features)
            if vector is not None:
                found[sha] = vector
    missing = [sha for sha in first_index if sha not in found]
    if missing:
        computed = extract([loaded.images[first_index[sha]] for sha in missing], extractor,
                           batch_size=batch_size, device=device, on_progress=on_progress)
        for sha, vector in zip(missing, computed):
            found[sha] = vector
            if cache is not None:
                cache.put(sha, extractor.name, extractor.preprocessing, vector)
    features = np.stack([found[sha] for sha in loaded.sha256s]) if loaded.sha256s else (
        np.empty((0, extractor.num_features), dtype=np.float32))
    logger.info("%s features: %d computed, %d from cache", extractor.name, len(missing), len(first_index) - len(missing))
    return FeatureResult(features.astype(np.float32, copy=False), len(missing), len(first_index) - len(missing))
