"""A seeded panel of simulated raters that fills a study through the real rating path.

Usage::

    python -m review.simulate [--db PATH] [--data-dir DIR] [--mode single|pair|both] [--raters 8]
                              [--seed 0] [--per-label N] [--size PX] [--checkpoints PATH ...]

So that the Analysis tab has data on the embedded demo, ``simulate_panel`` creates a study marked
``simulated`` with raters ``sim-01`` .. ``sim-NN`` (simulated accounts, which can never join a real
study, nor real accounts a simulated one), and answers every trial of every rater with
``studies.next_item`` and ``studies.submit``, exactly as a browser would. The stored ratings are
therefore shaped exactly like real ones, and flagged in the export (``study_simulated``,
``rater_simulated``). They are not evidence about any checkpoint: never pool them with real studies.

The behaviour model depends on the images, not on their hidden source:

1. Cues: each image's descriptors (colour means and spreads, saturation, redness, sharpness,
   gradient energy, edge density, dark fraction) are computed from its original file put through
   the study's presentation transform (what the rater's screen shows). Fitted on the study's real
   images only: ``unreal``, the standardised log Mahalanobis distance (Ledoit-Wolf shrinkage;
   leave-one-out for the real images themselves) from the real images, and ``p_ad``, a logistic
   regression of AD vs NonAD on the real images (leave-one-out for those too). When the study's
   images spread over more than one such standard deviation, ``unreal`` is divided by that spread:
   raters judge against what the study shows them.
2. Raters: a profile (specialty, years, colonoscopy band) fixed by the username, and traits drawn
   from the seed around means set by experience: skill at spotting synthetic images, a bias
   toward "real", pathology skill, an unsure band ("cannot tell"), a lapse rate, attention
   reliability, answer noise and a lognormal response time. One rater of the panel is careless.
3. Answers: perceived unrealness = skill x ``unreal`` + a persistent impression of the image +
   fresh trial noise; single mode calls "synthetic" above the rater's bias, pair mode picks the
   side perceived as less real. Repeats draw fresh trial noise (high, imperfect agreement).
   Attention cards are caught with the rater's attention reliability.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils
from PIL import Image

from common.labels import LABELS
from database import images as image_store
from database import raters as rater_store
from database import studies as study_store
from database.connection import open_db
from generation.pipelines import CheckpointLoadError, TextEncoderMissing
from review import studies, study_setup
from review.design import StudyDesign, _rng
from review.presentation import present, read_image
from review.studies import ReviewError
from review.study_setup import RaterSpec

logger = logging.getLogger(__name__)

OVERRIDE_REASON = "simulated panel (no audit)"
ADMIN_USERNAME = "sim-admin"
MAX_RATERS = 99
DESCRIPTORS: tuple[str, ...] = (
    "r_mean", "g_mean", "b_mean", "r_std", "g_std", "b_std", "saturation", "redness",
    "log_laplacian", "log_gradient", "edge_density", "dark_fraction",
)
_COLOUR = tuple(DESCRIPTORS.index(name) for name in ("r_mean", "g_mean", "b_mean", "saturation", "redness"))
_TEXTURE = tuple(DESCRIPTORS.index(name) for name in ("log_laplacian", "log_gradient", "edge_density"))
SPECIALTY_CYCLE: tuple[str, ...] = ("gastroenterology", "endoscopy nurse", "gastroenterology", "trainee")
_CONFIDENCE_EDGES = (0.4, 0.9, 1.6, 2.5)  # |margin| -> confidence 1..5
_PATHOLOGY_EDGES = (0.1, 0.2, 0.3, 0.4)  # |P(AD) - 0.5| -> confidence 1..5


# ---------------------------------------------------------------------------------------------
# Image cues


def image_descriptors(path: str | Path, size: int) -> np.ndarray:
    """Cheap descriptors (``DESCRIPTORS``) of an image file as a rater sees it.

    The original file goes through the study's presentation transform (``review.presentation``)
    first: raters never see frame size, borders or overlay text, so neither may the model. The
    statistics are taken inside a central disc that every presented image fills.
    """
    rgb = np.asarray(present(read_image(path)[1], size).convert("RGB"), dtype=np.float64) / 255.0
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    inside = np.hypot(yy, xx) < 0.4 * size
    hsv = np.asarray(Image.fromarray(np.uint8(np.rint(rgb * 255))).convert("HSV"), dtype=np.float64) / 255.0
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    laplacian = np.zeros_like(grey)
    laplacian[1:-1, 1:-1] = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2]
                             - grey[1:-1, 2:])
    gradient = np.zeros_like(grey)
    gradient[:-1, :-1] = np.hypot(np.diff(grey, axis=0)[:, :-1], np.diff(grey, axis=1)[:-1, :])
    pixels, total = rgb[inside], rgb[inside].sum(axis=1) + 1e-6
    return np.array([
        *pixels.mean(axis=0), *pixels.std(axis=0), hsv[..., 1][inside].mean(), (pixels[:, 0] / total).mean(),
        np.log(np.abs(laplacian[inside]).mean() + 1e-4), np.log(gradient[inside].mean() + 1e-4),
        (gradient[inside] > 0.08).mean(), (grey[inside] < 0.1).mean(),
    ])


@dataclass(frozen=True)
class ImageCues:
    """What a simulated rater perceives in one image.

    Attributes:
        unreal: How unlike the real images it looks, in standard deviations of the real images'
            own (leave-one-out) scores, divided by the spread over all the study's images when that
            exceeds 1: about 0 for a typical real image.
        p_ad: P(AD) from a logistic regression fitted on the real images.
        colour_off: Colour descriptors more than 2.5 real standard deviations off.
        texture_off: Sharpness or edge descriptors more than 2.5 real standard deviations off.
    """

    unreal: float
    p_ad: float
    colour_off: bool
    texture_off: bool


def fit_cues(real: dict[str, np.ndarray], real_labels: dict[str, str],
             others: dict[str, np.ndarray]) -> dict[str, ImageCues]:
    """Cues for every image from its descriptors, fitted on the real images only.

    Args:
        real: ``{sha256: descriptors}`` of the real images the raters know.
        real_labels: ``{sha256: "AD" | "NonAD"}`` for those images.
        others: ``{sha256: descriptors}`` of every image to score; real images among them are
            scored leave-one-out, so that they are not flattered by their own fit.

    Returns:
        ``{sha256: ImageCues}`` for ``others``.
    """
    shas = sorted(real)
    matrix = np.array([real[sha] for sha in shas])
    mean, spread = matrix.mean(axis=0), matrix.std(axis=0)
    spread = np.where(spread > 1e-6, spread, 1.0)
    z_real = (matrix - mean) / spread
    is_ad = np.array([real_labels[sha] == "AD" for sha in shas])
    # one fit on all real images for the others, one per left-out real image for that image
    fits = {sha: _Fit.on(z_real[np.arange(len(shas)) != i], is_ad[np.arange(len(shas)) != i])
            for i, sha in enumerate(shas)}
    everyone = _Fit.on(z_real, is_ad)
    reference = np.array([fits[sha].log_distance(z_real[i]) for i, sha in enumerate(shas)])
    ref_mean, ref_sd = reference.mean(), max(reference.std(), 1e-3)
    raw = {}
    for sha, descriptors in others.items():
        z = (descriptors - mean) / spread
        fit = fits.get(sha, everyone)
        raw[sha] = (float(np.clip((fit.log_distance(z) - ref_mean) / ref_sd, -4, 8)), fit.p_ad(z), z)
    # Raters judge against what the study shows them: when every synthetic image is far off (a small
    # demo model beside sharp frames), distances are rescaled so the study's spread is about 1, which
    # keeps the order of the images (and checkpoints) but leaves room to be fooled.
    scale = max(1.0, float(np.std([value for value, _, _ in raw.values()])))
    return {sha: ImageCues(unreal=value / scale, p_ad=p_ad, colour_off=bool(np.abs(z[list(_COLOUR)]).max() > 2.5),
                           texture_off=bool(np.abs(z[list(_TEXTURE)]).max() > 2.5))
            for sha, (value, p_ad, z) in raw.items()}


@dataclass(frozen=True)
class _Fit:
    """What a rater has learnt from real images: their centre and shrunk covariance, and P(AD)."""

    centre: np.ndarray
    precision: np.ndarray
    classifier: object | None  # None when the images hold one pathology only

    @classmethod
    def on(cls, z: np.ndarray, is_ad: np.ndarray) -> _Fit:
        from sklearn.covariance import LedoitWolf
        from sklearn.linear_model import LogisticRegression

        classifier = LogisticRegression(C=0.5).fit(z, is_ad) if 0 < is_ad.sum() < len(is_ad) else None
        return cls(z.mean(axis=0), LedoitWolf().fit(z).precision_, classifier)

    def log_distance(self, z: np.ndarray) -> float:
        """Log of the per-dimension Mahalanobis distance of ``z`` from the real images."""
        centred = z - self.centre
        return float(np.log(np.sqrt(centred @ self.precision @ centred / len(z)) + 1e-9))

    def p_ad(self, z: np.ndarray) -> float:
        return 0.5 if self.classifier is None else float(self.classifier.predict_proba(z[None, :])[0, 1])


# ---------------------------------------------------------------------------------------------
# Raters


@dataclass(frozen=True)
class SimulatedRater:
    """One simulated rater: a profile (fixed by the username) and this panel's traits.

    Attributes:
        synthetic_skill: Weight of an image's unrealness in the perceived unrealness.
        real_bias: Perceived unrealness needed to answer "synthetic" (leaning to "real" when > 0).
        side_bias: Pair mode: extra unrealness perceived on the left image.
        pathology_skill: Weight of the pathology cue (logit of P(AD)).
        unsure_band: "cannot tell" when the perceived P(AD) is within this of 0.5.
        lapse: Probability of answering at random.
        attention: Probability of looking properly at an attention card.
        noise: Standard deviation of fresh noise per trial (lower: more consistent on repeats).
        rt_median_s, rt_sigma: Lognormal response time (median seconds, log-sd).
        careless: The panel's careless rater.
    """

    username: str
    specialty: str
    years: int
    colonoscopies: str
    synthetic_skill: float
    real_bias: float
    side_bias: float
    pathology_skill: float
    unsure_band: float
    lapse: float
    attention: float
    noise: float
    rt_median_s: float
    rt_sigma: float
    careless: bool = False


def rater_profile(index: int) -> tuple[str, int, str, float]:
    """(specialty, years of practice, colonoscopy band, experience 0..1) of ``sim-<index>``."""
    specialty = SPECIALTY_CYCLE[(index - 1) % len(SPECIALTY_CYCLE)]
    rng = _rng("simulated profile", index)
    if specialty == "gastroenterology":
        years = int(rng.integers(3, 31))
        band = "500-1000" if years < 5 else "1000-5000" if years < 12 else ">5000"
        return specialty, years, band, 0.7 + 0.3 * min(years, 20) / 20
    if specialty == "endoscopy nurse":  # assists at many colonoscopies, performs few or none
        years = int(rng.integers(1, 26))
        return specialty, years, "none" if years < 8 else "<100", 0.45 + 0.25 * min(years, 20) / 20
    years = int(rng.integers(0, 5))
    return specialty, years, "<100" if years < 2 else "100-500", 0.25 + 0.1 * years / 4


def draw_panel(n_raters: int, seed: int) -> list[SimulatedRater]:
    """The panel ``sim-01`` .. ``sim-NN``; with two or more raters, one (seeded) is careless."""
    careless = int(_rng("simulated careless", seed).integers(n_raters)) if n_raters >= 2 else -1
    panel = []
    for i in range(n_raters):
        specialty, years, band, experience = rater_profile(i + 1)
        rng = _rng("simulated traits", seed, i + 1)
        traits = dict(
            synthetic_skill=max(0.2, 0.6 + 1.6 * experience + rng.normal(0, 0.25)),
            real_bias=rng.normal(0.35, 0.3), side_bias=rng.normal(0, 0.15),
            pathology_skill=max(0.2, 0.5 + 1.5 * experience + rng.normal(0, 0.2)),
            unsure_band=float(np.clip(0.16 - 0.1 * experience + rng.normal(0, 0.02), 0.03, 0.25)),
            lapse=rng.uniform(0.01, 0.04), attention=rng.uniform(0.97, 1.0), noise=rng.uniform(0.5, 0.8),
            rt_median_s=max(2.5, 6.5 - 2.5 * experience + rng.normal(0, 0.5)), rt_sigma=0.35)
        if i == careless:
            traits.update(lapse=0.15, attention=0.5, noise=1.3, rt_median_s=traits["rt_median_s"] * 0.45)
        panel.append(SimulatedRater(f"sim-{i + 1:02d}", specialty, years, band, careless=i == careless,
                                    **{k: float(v) for k, v in traits.items()}))
    return panel


# ---------------------------------------------------------------------------------------------
# Answers


def answer_trial(rater: SimulatedRater, mode: str, shown: list[ImageCues | None], seed: int, position: int,
                 shas: list[str]) -> tuple[dict, int]:
    """A rater's answers to one trial, and the response time in ms.

    Args:
        shown: The cues of each image shown (left, right), ``None`` for an attention card.
        position: The trial's position; with the seed and username it seeds the fresh noise.
        shas: The images' sha256s; they seed the rater's persistent impression of each image.
    """
    rng = _rng("simulated trial", seed, rater.username, position)
    impressions = [_rng("simulated impression", seed, rater.username, sha).normal(0, 0.6, size=2) for sha in shas]
    if mode == "single":
        answers, margin = _single(rater, shown[0], impressions[0], rng)
    else:
        answers, margin = _pair(rater, shown, impressions, rng)
    median = rater.rt_median_s * (0.6 if None in shown else np.exp(0.15 * (2 - min(abs(margin), 2))))
    response_ms = int(np.clip(rng.lognormal(np.log(median * 1000), rater.rt_sigma), 300, 600_000))
    return answers, response_ms


def _single(rater: SimulatedRater, cues: ImageCues | None, impression: np.ndarray,
            rng: np.random.Generator) -> tuple[dict, float]:
    if cues is None:  # an attention card: caught when the rater looks
        if rng.random() < rater.attention:
            return {"real_or_synthetic": "synthetic", "source_confidence": 5, "realism": 1,
                    "pathology": "cannot tell", "pathology_confidence": 1, "artifacts": ["anatomy"],
                    "comment": ""}, 3.0
        return {"real_or_synthetic": "real", "source_confidence": 3, "realism": 4,
                "pathology": str(rng.choice(LABELS)), "pathology_confidence": 2, "artifacts": [],
                "comment": ""}, 0.5
    perceived = rater.synthetic_skill * cues.unreal + impression[0] + rng.normal(0, rater.noise)
    margin = perceived - rater.real_bias
    if rng.random() < rater.lapse:
        margin = rng.normal(0, 0.3)
    call = "synthetic" if margin > 0 else "real"
    pathology, pathology_confidence = _pathology(rater, cues, impression[1], rng)
    artifacts = []
    if call == "synthetic":
        flagged = [("colour", cues.colour_off), ("texture", cues.texture_off)]
        artifacts = [name for name, off in flagged if off and rng.random() < 0.8]
    return {"real_or_synthetic": call, "source_confidence": _confidence(margin, _CONFIDENCE_EDGES),
            "realism": int(np.clip(np.rint(3 - 0.9 * margin + rng.normal(0, 0.3)), 1, 5)),
            "pathology": pathology, "pathology_confidence": pathology_confidence, "artifacts": artifacts,
            "comment": ""}, margin


def _pair(rater: SimulatedRater, shown: list[ImageCues | None], impressions: list[np.ndarray],
          rng: np.random.Generator) -> tuple[dict, float]:
    calls = [_pathology(rater, cues, imp[1], rng) if cues is not None else ("cannot tell", 1)
             for cues, imp in zip(shown, impressions)]
    answers = {"pathology_left": calls[0][0], "pathology_right": calls[1][0]}
    if None in shown:  # an attention card beside a real image: picked when the rater looks
        card = "left" if shown[0] is None else "right"
        looked = rng.random() < rater.attention
        choice = card if looked else str(rng.choice(["left", "right"]))
        return {**answers, "synthetic_choice": choice, "choice_confidence": 5 if looked else 2}, 3.0 if looked else 0.5
    perceived = [rater.synthetic_skill * cues.unreal + imp[0] + rng.normal(0, rater.noise)
                 for cues, imp in zip(shown, impressions)]
    margin = perceived[0] + rater.side_bias - perceived[1]
    if rng.random() < rater.lapse:
        margin = rng.normal(0, 0.3)
    return {**answers, "synthetic_choice": "left" if margin > 0 else "right",
            "choice_confidence": _confidence(margin, _CONFIDENCE_EDGES)}, margin


def _pathology(rater: SimulatedRater, cues: ImageCues, impression: float, rng: np.random.Generator) -> tuple[str, int]:
    p = float(np.clip(cues.p_ad, 1e-4, 1 - 1e-4))
    logit = rater.pathology_skill * np.log(p / (1 - p)) + impression + rng.normal(0, rater.noise)
    if rng.random() < rater.lapse:
        logit = rng.normal(0, 2)
    q = 1 / (1 + np.exp(-logit))
    if abs(q - 0.5) < rater.unsure_band:
        return "cannot tell", _confidence(q - 0.5, _PATHOLOGY_EDGES[:1])
    return ("AD" if q > 0.5 else "NonAD"), _confidence(q - 0.5, _PATHOLOGY_EDGES)


def _confidence(margin: float, edges: tuple[float, ...]) -> int:
    return int(np.digitize(abs(margin), edges)) + 1


# ---------------------------------------------------------------------------------------------
# The panel


def simulate_panel(db: sqlite_utils.Database, data_dir: Path, session: str, name: str, design: StudyDesign,
                   n_raters: int = 8, seed: int = 0) -> dict:
    """Create a simulated study and fill it with a seeded panel through the real rating path.

    The study is created with ``simulated=True`` for raters ``sim-01`` .. ``sim-NN`` (simulated
    accounts, created or reused; each gets a fresh random password, used once to sign in), gets
    its blinding audit, and is opened (with the override reason ``OVERRIDE_REASON`` if the audit
    fails). Each rater saves a profile and answers every trial via ``studies.next_item`` and
    ``studies.submit``; the same database state, design and seed give the same answers.

    Args:
        db: The study database.
        data_dir: The app's data folder (presented images are written under it).
        session: An admin's session token.
        name: The study's name.
        design: The study design; in single mode at least 2 real images per label.
        n_raters: Panel size, 1 to ``MAX_RATERS``.
        seed: Seeds the raters' traits and answers (the design has its own seed).

    Returns:
        ``{"study_id", "name", "mode", "raters", "careless", "ratings", "audit_passed"}``.

    Raises:
        Forbidden: If the session is not an admin's.
        ReviewError: For a bad panel size or seed, too few real images, a design that shows masks,
            or a ``sim-NN`` name that belongs to a real account.
    """
    studies.require_admin(db, session)
    if isinstance(n_raters, bool) or not isinstance(n_raters, int) or not 1 <= n_raters <= MAX_RATERS:
        raise ReviewError(f"n_raters must be an integer from 1 to {MAX_RATERS}, got {n_raters!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ReviewError(f"seed must be a non-negative integer, got {seed!r}")
    if design.show_masks:
        raise ReviewError("a simulated panel does not judge whether masks fit their lesions: "
                          "create mask studies (show_masks) with real raters")
    if design.mode == "single" and design.real_images_per_label < 2:
        raise ReviewError("a simulated panel learns what real looks like from the study's real images: "
                          f"the design needs real_per_label >= 2, got {design.real_images_per_label}")
    panel = draw_panel(n_raters, seed)
    passwords = {rater.username: secrets.token_urlsafe(18) for rater in panel}
    existing = {r.username for r in panel if rater_store.get_rater_by_username(db, r.username) is not None}
    created = study_setup.create_study(db, data_dir, session, name, design,
                                       [RaterSpec(u, p) for u, p in passwords.items()], simulated=True)
    for username in sorted(existing):  # their old passwords are unknown (random): set new ones
        studies.set_password(db, username, passwords[username])
    study_id = created.study_id
    audit = study_setup.audit_study(db, session, study_id)
    study_setup.open_study(db, session, study_id, "" if audit["passed"] else OVERRIDE_REASON)
    cues = study_cues(db, study_id, design.size)
    stored = 0
    for rater in panel:
        token = studies.sign_in(db, rater.username, passwords[rater.username])
        studies.save_profile(db, token, rater.specialty, rater.years, rater.colonoscopies)
        stored += _rate_all(db, token, study_id, rater, design.mode, cues, seed)
    careless = next((r.username for r in panel if r.careless), None)
    logger.info("simulated panel: study %s (%s), %d raters (careless: %s), %d ratings stored",
                study_id, name, len(panel), careless, stored)
    return {"study_id": study_id, "name": name, "mode": design.mode, "raters": [r.username for r in panel],
            "careless": careless, "ratings": stored, "audit_passed": bool(audit["passed"])}


def study_cues(db: sqlite_utils.Database, study_id: int, size: int) -> dict[str, ImageCues | None]:
    """Cues for every image of a study (``None`` for attention cards), fitted on its real images."""
    rows = study_store.study_images(db, study_id)
    descriptors = {row["sha256"]: image_descriptors(image_store.get_image(db, row["sha256"])["path"], size)
                   for row in rows if row["role"] != "attention"}
    real = [row for row in rows if row["role"] == "real"]
    fitted = fit_cues({row["sha256"]: descriptors[row["sha256"]] for row in real},
                      {row["sha256"]: row["label"] for row in real}, descriptors)
    return {row["sha256"]: fitted.get(row["sha256"]) for row in rows}


def _rate_all(db, token: str, study_id: int, rater: SimulatedRater, mode: str,
              cues: dict[str, ImageCues | None], seed: int) -> int:
    count = 0
    while (view := studies.next_item(db, token, study_id)) is not None:
        trial = study_store.get_trial(db, view.trial_id)  # server side: which images were sent
        shas = [sha for sha in (trial["image_left"], trial["image_right"]) if sha is not None]
        answers, response_ms = answer_trial(rater, mode, [cues[sha] for sha in shas], seed, trial["position"], shas)
        key = f"simulated-{study_id}-{view.trial_id}"
        if not studies.submit(db, token, study_id, view.trial_id, answers, key, response_ms=response_ms):
            raise ReviewError(f"trial {view.trial_id} was already rated; the panel stops")
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m review.simulate",
        description=(
            "Fill demo studies with a seeded panel of SIMULATED raters (sim-01, sim-02, ...) so that "
            "the Analysis tab has data to show. The studies and raters are marked simulated (exported as "
            "study_simulated=1, rater_simulated=1), can never include real raters, and say nothing about "
            "real clinicians: never pool them with real studies. Synthetic images missing for the chosen "
            "checkpoints are generated first; real images must already be registered (make demo-data)."),
        epilog="exit status: 0 done (an existing simulated study of the same name is kept and skipped), "
               "2 a user error (one 'error: ...' line on stderr)",
    )
    parser.add_argument("--db", type=Path, metavar="PATH",
                        help="study database (env POLYP_DB; default DATA/polypturing.db)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="project data folder (env POLYP_DATA_DIR; default ./data)")
    parser.add_argument("--mode", choices=("single", "pair", "both"), default="both",
                        help="study mode(s) to simulate (default: both, one study each)")
    parser.add_argument("--raters", type=int, default=8, metavar="N", help=f"panel size, 1-{MAX_RATERS} (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the design, generation and the raters (default 0)")
    parser.add_argument("--per-label", type=int, default=4, metavar="N",
                        help="synthetic images per checkpoint and pathology; missing ones are generated (default 4)")
    parser.add_argument("--size", type=int, default=64, metavar="PX", help="presentation size in pixels (default 64)")
    parser.add_argument("--checkpoints", nargs="+", type=Path, metavar="PATH",
                        help="checkpoint folders (default: the embedded demo checkpoints assets/demo/checkpoint-*)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    # The door's configuration (flags, then environment): read by this entry point only, so the
    # room's functions never depend on the app above them.
    from appconfig import Services, build_config
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    flags = [arg for flag, value in (("--db", args.db), ("--data-dir", args.data_dir)) if value
             for arg in (flag, str(value))]
    config = build_config(flags)
    try:
        if not 1 <= args.raters <= MAX_RATERS or args.per_label < 1 or args.seed < 0:
            raise ReviewError(f"--raters must be 1-{MAX_RATERS}, --per-label >= 1 and --seed >= 0")
        summaries = _run(config, args)
    except (ValueError, OSError, sqlite3.Error) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for summary in summaries:
        print(f"study {summary['study_id']} {summary['name']!r}: {summary['ratings']} simulated ratings "
              f"by {len(summary['raters'])} raters")
    return 0


def _run(config, args: argparse.Namespace) -> list[dict]:
    db = open_db(config.db_path)
    try:
        real = image_store.count_images(db)["real"]
        if min(real.values()) < 2:
            counts = ", ".join(f"{label} {n}" for label, n in real.items())
            raise ReviewError(f"{config.db_path} holds too few real images ({counts}; at least 2 per label): "
                              "run `make demo-data` first, or python -m review.register --data DIR")
        session = _admin_session(db)
    finally:
        db.close()

    services = Services(config)
    paths = [str(p) for p in args.checkpoints] if args.checkpoints else _demo_checkpoints(services)
    try:
        ids = study_setup.ensure_images(services, paths, args.per_label, args.seed, generate=True)
    except (CheckpointLoadError, TextEncoderMissing) as error:
        raise ReviewError(f"generating the missing synthetic images failed: {error}") from error
    where = "demo" if not args.checkpoints else "checkpoints " + ", ".join(map(str, ids))
    summaries = []
    db = services.db()
    try:
        for mode in (("single", "pair") if args.mode == "both" else (args.mode,)):
            name = f"Simulated panel ({mode}{f', seed {args.seed}' if args.seed else ''}) — {where}"
            if _existing(db, name):
                continue
            per_label = image_store.count_images(db)["real"]
            design = StudyDesign(mode=mode, checkpoint_ids=tuple(ids), images_per_cell=args.per_label,
                                 real_per_label=min(args.per_label * len(ids), *per_label.values()),
                                 ratings_per_image=min(3, args.raters), repeats=3, attention_checks=3,
                                 size=args.size, seed=args.seed)
            summaries.append(simulate_panel(db, config.data_dir, session, name, design, args.raters, args.seed))
    finally:
        db.close()
    return summaries


def _admin_session(db: sqlite_utils.Database) -> str:
    """Sign in the simulated admin ``sim-admin``, creating it, with a fresh random password."""
    password = secrets.token_urlsafe(18)
    admin = rater_store.get_rater_by_username(db, ADMIN_USERNAME)
    if admin is None:
        studies.create_account(db, ADMIN_USERNAME, "admin", password, simulated=True)
    elif not admin["simulated"] or admin["role"] != "admin":
        raise ReviewError(f"the account {ADMIN_USERNAME!r} exists and is not a simulated admin; rename it first")
    else:
        studies.set_password(db, ADMIN_USERNAME, password)
    return studies.sign_in(db, ADMIN_USERNAME, password)


def _existing(db: sqlite_utils.Database, name: str) -> bool:
    study = next((s for s in study_store.list_studies(db) if s["name"] == name), None)
    if study is None:
        return False
    if not study["simulated"]:
        raise ReviewError(f"a real study is named {name!r}; rename it before simulating")
    logger.info("study %s (%s) already exists: kept, skipped", study["id"], name)
    return True


def _demo_checkpoints(services) -> list[str]:
    demo = services.config.demo_dir.resolve()
    found = [str(info.path) for info in services.checkpoints() if Path(info.path).resolve().parent == demo]
    if not found:
        raise ReviewError(f"no demo checkpoints under {demo}; give --checkpoints PATH ...")
    return found


if __name__ == "__main__":
    sys.exit(main())
