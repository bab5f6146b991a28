"""Frechet distance against closed forms, a direct eigenvalue formula and scipy; the running statistics."""
import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from dawn_train.metrics.frechet import FrechetMetric, frechet_distance, mean_cov


def direct_frechet(mu1, s1, mu2, s2):
    """Tr sqrt(S1 S2) = sum of sqrt of the eigenvalues of S1 S2 (real, >= 0 for SPD S1, S2)."""
    eig = np.linalg.eigvals(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(eig.real.clip(0))))


def symmetric_frechet(mu1, s1, mu2, s2):
    """TF-GAN / VideoGPT form: Tr sqrt(sqrt(S1) S2 sqrt(S1))."""
    r = scipy.linalg.sqrtm(s1).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(r @ s2 @ r).real))


def random_gaussian_stats(rng, d, n):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("method", ["sqrtm", "eig"])
def test_closed_form_small(method):
    # |mu1 - mu2|^2 = 5; Tr = 14 + 6 - 2 * (2 + 2 + 3) = 6
    got = frechet_distance(np.array([0.0, 1, 2]), np.diag([1.0, 4, 9]), np.array([1.0, 1, 0]), np.diag([4.0, 1, 1]),
                           method=method)
    assert got == pytest.approx(11.0, abs=1e-9)


@pytest.mark.parametrize("method", [pytest.param("sqrtm", marks=pytest.mark.slow), "eig"])
def test_closed_form_2048(method):
    """pytorch-fid's own test case; scipy's sqrtm needs ~20 s at 2048 dims on a busy 2-core CPU."""
    d = 2048
    got = frechet_distance(np.zeros(d), np.eye(d), np.ones(d), np.eye(d), method=method)
    assert got == pytest.approx(2048.0, abs=1e-6)


@pytest.mark.parametrize("d", [2, 16, 64])
def test_random_gaussians_match_references(d):
    rng = np.random.default_rng(d)
    mu1, s1 = random_gaussian_stats(rng, d, 4 * d)
    mu2, s2 = random_gaussian_stats(rng, d, 4 * d)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(frechet_distance(mu1, s1, mu2, s2, method="eig"), rel=1e-9)
    assert got == pytest.approx(direct_frechet(mu1, s1, mu2, s2), rel=1e-7)
    assert got == pytest.approx(symmetric_frechet(mu1, s1, mu2, s2), rel=1e-7)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-7 * np.trace(s1))


def test_singular_covariances_stay_finite():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 32)), rng.normal(size=(5, 32))  # rank 4 covariances in 32 dims
    got = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert np.isfinite(got) and got > 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), method="svd")


def test_running_stats_equal_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)) * 3 + 7
    mu, sigma = mean_cov(torch.tensor(x.sum(0)), torch.tensor(x.T @ x), len(x))
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_metric_batches_equal_one_shot_and_self_distance_zero():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) + 0.5
    metric = FrechetMetric(nn.Identity(), num_features=5)
    for part in np.array_split(real, 3):
        metric.update(torch.tensor(part, dtype=torch.float32), real=True)
    for part in np.array_split(fake, 4):
        metric.update(torch.tensor(part, dtype=torch.float32), real=False)
    want = frechet_distance(fake.astype(np.float32).mean(0), np.cov(fake.astype(np.float32), rowvar=False),
                            real.astype(np.float32).mean(0), np.cov(real.astype(np.float32), rowvar=False))
    got = metric.compute()
    assert got.dtype == torch.float64 and float(got) == pytest.approx(want, rel=1e-6)

    same = FrechetMetric(nn.Identity(), num_features=5)
    same.update(torch.tensor(real), real=True)
    same.update(torch.tensor(real), real=False)
    assert float(same.compute()) == pytest.approx(0.0, abs=1e-6)


def test_metric_warns_with_fewer_samples_than_dims_and_rejects_bad_shapes():
    metric = FrechetMetric(nn.Identity(), num_features=8)
    metric.update(torch.randn(4, 8), real=True)
    metric.update(torch.randn(4, 8), real=False)
    with pytest.warns(UserWarning, match="feature dims"):
        metric.compute()
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        metric.update(torch.randn(4, 7), real=True)


def test_network_follows_device_moves_but_keeps_float32():
    metric = FrechetMetric(nn.Linear(3, 2), num_features=2)
    metric.update(torch.randn(4, 2), real=True)
    metric.to(torch.float16)  # what Lightning's true-half precision does to the whole module
    assert metric.net.weight.dtype == torch.float32 and metric.real_sum.dtype == torch.float64
    assert metric.real_n.dtype == torch.long and int(metric.real_n) == 4
    metric.to("meta")
    assert metric.net.weight.device.type == "meta" and metric.real_sum.device.type == "meta"
    assert not metric.net.training and "net" not in dict(metric.named_children())
    metric.train()
    assert not metric.net.training and not any(k.startswith("net") for k in metric.state_dict())
