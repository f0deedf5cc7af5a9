"""Metric functions (``evaluation.distances``) against independent references (scipy, torchmetrics) and known
properties, and the report that ``evaluation.metrics`` builds from them."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

from evaluation.distances import TooFewSamples, _poly_mmd, fid, fid_bootstrap, frechet_distance, kid, prdc
from evaluation.features import extract
from evaluation.metrics import MetricSettings, MetricsReport, evaluate_features
from tests.evaluation.conftest import random_images


def _feats(n, d, seed=0, shift=0.0):
    return np.random.default_rng(seed).normal(shift, 1.0, (n, d))


def _stats(x):
    return x.mean(axis=0), np.cov(x, rowvar=False)


def test_identical_sets_give_zero_distance():
    x = _feats(200, 16)
    assert frechet_distance(*_stats(x), *_stats(x)) == pytest.approx(0.0, abs=1e-6)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_independent_symmetric_sqrtm():
    x, y = _feats(300, 24, seed=1), _feats(250, 24, seed=2, shift=0.3) * 1.5
    (mu1, s1), (mu2, s2) = _stats(x), _stats(y)
    root1 = scipy.linalg.sqrtm(s1).real
    # Independent form: Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD square root.
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(root1 @ s2 @ root1).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize(("n_real", "n_fake"), [(10, 12), (200, 150)])
def test_fid_equals_frechet_distance_of_sample_statistics(n_real, n_fake):
    x, y = _feats(n_real, 32, seed=3), _feats(n_fake, 32, seed=4, shift=0.5)
    assert fid(x, y) == pytest.approx(frechet_distance(*_stats(x), *_stats(y)), rel=1e-6)


def _torchmetrics_fid_kid(extractor, real_u8, fake_u8):
    fid_metric = FrechetInceptionDistance(feature=extractor)
    kid_metric = KernelInceptionDistance(feature=extractor, subsets=3, subset_size=min(len(real_u8), len(fake_u8)))
    for metric in (fid_metric, kid_metric):
        metric.update(real_u8, real=True)
        metric.update(fake_u8, real=False)
    kid_mean, _ = kid_metric.compute()
    return float(fid_metric.compute()), float(kid_mean)


def _to_uint8_tensor(images):
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def test_fid_and_kid_match_torchmetrics_with_tiny_extractor(tiny_extractor):
    real, fake = random_images(30, (24, 24), seed=1), random_images(30, (24, 24), seed=2, low=60, high=256)
    tm_fid, tm_kid = _torchmetrics_fid_kid(tiny_extractor, _to_uint8_tensor(real), _to_uint8_tensor(fake))
    f_real, f_fake = extract(real, tiny_extractor), extract(fake, tiny_extractor)
    assert fid(f_real, f_fake) == pytest.approx(tm_fid, rel=1e-4)
    assert kid(f_real, f_fake, subsets=3, subset_size=30).mean == pytest.approx(tm_kid, rel=1e-4)


def test_fid_and_kid_match_torchmetrics_with_real_inception(inception):
    real, fake = random_images(10, (32, 32), seed=5), random_images(10, (32, 32), seed=6, low=0, high=120)
    tm_fid, tm_kid = _torchmetrics_fid_kid(inception, _to_uint8_tensor(real), _to_uint8_tensor(fake))
    f_real, f_fake = extract(real, inception), extract(fake, inception)
    assert fid(f_real, f_fake) == pytest.approx(tm_fid, rel=1e-4)
    assert kid(f_real, f_fake, subsets=2, subset_size=10).mean == pytest.approx(tm_kid, rel=1e-4)


def test_kid_kernel_matches_torchmetrics_poly_mmd_on_subsets():
    x, y = _feats(20, 12, seed=7), _feats(20, 12, seed=8, shift=0.2)
    for gamma, degree, coef in [(None, 3, 1.0), (0.5, 2, 0.5)]:
        expected = poly_mmd(torch.from_numpy(x), torch.from_numpy(y), degree, gamma, coef).item()
        assert _poly_mmd(x, y, degree, gamma, coef) == pytest.approx(expected, rel=1e-10)


def test_kid_is_seeded_and_clamps_with_a_logged_warning(caplog):
    x, y = _feats(30, 8, seed=9), _feats(20, 8, seed=10, shift=1.0)
    with caplog.at_level(logging.WARNING, logger="evaluation.distances"):
        result = kid(x, y, subsets=10, subset_size=1000, seed=3)
    assert result.subset_size == 20 and result.subsets == 10
    assert "clamped from 1000 to 20" in result.warning and "n_fake=20" in result.warning
    assert result.warning in caplog.text
    assert kid(x, y, subsets=10, subset_size=1000, seed=3) == result
    assert kid(x, y, subsets=10, subset_size=15).warning is None


def test_fid_bootstrap_is_seeded_with_an_ordered_ci():
    x, y = _feats(40, 6, seed=11), _feats(40, 6, seed=12, shift=0.5)
    result = fid_bootstrap(x, y, n_boot=50, seed=1)
    assert result.value == pytest.approx(fid(x, y))
    assert result.ci_low < result.ci_high and result.n_boot == 50
    assert fid_bootstrap(x, y, n_boot=50, seed=1) == result
    assert fid_bootstrap(x, y, n_boot=0).ci_low is None


def test_prdc_identical_and_far_apart_sets():
    x = _feats(50, 10, seed=13)
    same = prdc(x, x.copy(), k=5)
    assert (same.precision, same.recall, same.coverage, same.k) == (1.0, 1.0, 1.0, 5)
    far = prdc(x, x + 100.0, k=5)
    assert (far.precision, far.recall, far.density, far.coverage) == (0.0, 0.0, 0.0, 0.0)


def test_too_few_samples_name_metric_argument_and_need():
    one, many = _feats(1, 4), _feats(10, 4)
    with pytest.raises(TooFewSamples, match=r"FID: fake has 1 sample\(s\); allowed: at least 2"):
        fid(many, one)
    with pytest.raises(TooFewSamples, match=r"PRDC: real has 5 sample\(s\); allowed: at least 6"):
        prdc(_feats(5, 4), many, k=5)
    with pytest.raises(ValueError, match="d=4 but fake has d=3"):
        fid(many, _feats(10, 3))


def test_report_computes_what_it_can_and_explains_the_rest():
    report = MetricsReport(n_real=4, n_fake=3, extractor="x", preprocessing="p")
    evaluate_features(report, _feats(4, 8), _feats(3, 8, seed=1), MetricSettings(n_boot=10, k=5))
    assert report.fid is not None and report.kid_mean is not None and report.kid_subset_size == 3
    assert report.precision is None and "PRDC: real has 4 sample(s)" in report.skipped["prdc"]
    assert any("clamped" in w for w in report.warnings) and any("small-sample bias" in w for w in report.warnings)
    single = evaluate_features(MetricsReport(1, 1, "x", "p"), _feats(1, 8), _feats(1, 8), MetricSettings(n_boot=5))
    assert set(single.skipped) == {"fid", "kid", "prdc"}


def test_metric_settings_reject_bad_values():
    with pytest.raises(ValueError, match="k: got 0; allowed: an integer >= 1"):
        MetricSettings(k=0)
    with pytest.raises(ValueError, match="alpha"):
        MetricSettings(alpha=1.5)


def test_importing_evaluation_does_not_import_gradio():
    code = ("import sys, evaluation.metrics, evaluation.distances, evaluation.features, evaluation.cache, evaluation.images; "
            "sys.exit('gradio' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
