"""How a simulated rater answers: cues read from the images, traits drawn per rater, answers per trial.

Pure and seeded (``review.design.seeded_rng``), no database: ``review.simulate`` runs a panel of
these raters through the real rating path. The model depends on the images, not on their hidden
source:

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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.labels import LABELS
from review.design import seeded_rng
from review.presentation import present, read_image

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
    rng = seeded_rng("simulated profile", index)
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
    careless = int(seeded_rng("simulated careless", seed).integers(n_raters)) if n_raters >= 2 else -1
    panel = []
    for i in range(n_raters):
        specialty, years, band, experience = rater_profile(i + 1)
        rng = seeded_rng("simulated traits", seed, i + 1)
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
    rng = seeded_rng("simulated trial", seed, rater.username, position)
    impressions = [seeded_rng("simulated impression", seed, rater.username, sha).normal(0, 0.6, size=2) for sha in shas]
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
