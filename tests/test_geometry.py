"""Geometry measurements against closed forms (DESIGN.md section 4, items 1, 2, 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from simulator.geometry.height import measure_height_field, summarize_heights, weighted_median
from simulator.geometry.stretch import feature_jacobians, stretch_spectra
from simulator.geometry.tangent import margin_gradients, tangent_fractions
from simulator.manifolds import Flat, Sphere


def linear_classifier(n: int, seed: int, scale_bias: float = 0.3) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(n, 2).double()
    with torch.no_grad():
        model.bias.mul_(scale_bias)
    return model


def margin_weights(model: nn.Linear) -> tuple[np.ndarray, float]:
    """The 2-class logit difference z_1 - z_0 = w.x + c."""
    w = (model.weight[1] - model.weight[0]).detach().numpy()
    c = float((model.bias[1] - model.bias[0]).detach())
    return w, c


class RadialClassifier(nn.Module):
    """Class 1 inside the sphere |x| = radius, class 0 outside: the boundary is that sphere."""

    def __init__(self, radius: float):
        super().__init__()
        self.radius = radius

    def forward(self, x):
        return torch.stack([x.pow(2).sum(-1) - self.radius**2, torch.zeros_like(x[..., 0])], dim=-1)


class LinearFeatures(nn.Module):
    """features(x) = A x, so the feature Jacobian is A everywhere."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.body = nn.Linear(matrix.shape[1], matrix.shape[0], bias=False).double()
        self.head = nn.Linear(matrix.shape[0], 2).double()
        with torch.no_grad():
            self.body.weight.copy_(matrix)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("k,n", [(2, 3), (3, 8), (10, 100)])
def test_tangent_fraction_of_a_linear_classifier(k, n):
    flat = Flat(dim=k, ambient_dim=n, embedding="random", embedding_seed=3)
    model = linear_classifier(n, seed=k)
    u = flat.sample_chart(50, np.random.default_rng(0))
    x = torch.as_tensor(flat.immersion(u))
    bases = torch.as_tensor(flat.tangent_basis(u))
    tau = tangent_fractions(margin_gradients(model, x), bases).numpy()
    w, _ = margin_weights(model)
    expected = np.linalg.norm(flat.to_tangent(w, u[0])) / np.linalg.norm(w)
    np.testing.assert_allclose(tau, expected, rtol=1e-10)


def test_random_directions_have_mean_tau_squared_k_over_n():
    k, n, count = 10, 100, 20000
    flat = Flat(dim=k, ambient_dim=n, embedding="random", embedding_seed=1)
    u = np.zeros((count, k))
    vectors = torch.as_tensor(np.random.default_rng(0).standard_normal((count, n)))
    tau = tangent_fractions(vectors, torch.as_tensor(flat.tangent_basis(u))).numpy()
    # tau^2 ~ Beta(k/2, (n-k)/2): mean k/n, sd of the sample mean sqrt(var/count)
    a, b = k / 2, (n - k) / 2
    sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)) / count)
    assert abs(np.mean(tau**2) - k / n) < 5 * sd


def _field(model, manifold, resolution=24, t_max=1.0, tolerance=1e-4):
    train = manifold.immersion(manifold.sample_chart(50, np.random.default_rng(0)))
    return measure_height_field(model, manifold, train, resolution, 10**6, t_max, tolerance, bracket_steps=32,
                                near_radius=0.1, rng=np.random.default_rng(1))


def test_height_field_of_a_linear_classifier_codimension_one():
    flat = Flat(dim=2, ambient_dim=3, embedding="random", embedding_seed=5)
    model = linear_classifier(3, seed=11)
    field = _field(model, flat)
    w, c = margin_weights(model)
    x = flat.immersion(field.u)
    normal = flat.unit_normal(field.u)
    exact = -(x @ w + c) / (normal @ w)  # where w.(p + t nu) + c = 0
    inside = np.abs(exact) < 1.0 - 1e-3
    assert inside.sum() > 50 and (~inside).sum() > 0  # the test covers both cases
    np.testing.assert_allclose(field.h[inside], exact[inside], atol=2e-4)
    outside = np.abs(exact) > 1.0 + 1e-3
    assert np.all(np.isnan(field.h[outside]))


def test_height_field_of_a_linear_classifier_higher_codimension():
    flat = Flat(dim=3, ambient_dim=8, embedding="random", embedding_seed=2)
    model = linear_classifier(8, seed=4, scale_bias=0.1)
    field = _field(model, flat, resolution=8, t_max=3.0)
    w, c = margin_weights(model)
    normal_norm = np.linalg.norm(flat.to_normal(w, np.zeros(3)))
    exact = np.abs(flat.immersion(field.u) @ w + c) / normal_norm  # along the normal part of the gradient
    inside = exact < 3.0 - 1e-3
    assert inside.sum() > 50
    np.testing.assert_allclose(np.abs(field.h[inside]), exact[inside], atol=2e-4)


@pytest.mark.parametrize("n", [3, 5])
def test_height_field_of_an_offset_sphere_is_the_radius_difference(n):
    sphere = Sphere(dim=2, radius=1.0, ambient_dim=n, embedding="random", embedding_seed=0)
    field = _field(RadialClassifier(1.3), sphere, resolution=16)
    np.testing.assert_allclose(np.abs(field.h), 0.3, atol=2e-4)
    if n == 3:  # codimension 1: the outward normal gives the sign
        np.testing.assert_allclose(field.h, 0.3, atol=2e-4)
    summary = summarize_heights(field, clinging_epsilon=0.5, heights_at_train=np.full(10, 0.3))
    assert summary["clinging_fraction"] == pytest.approx(1.0)
    assert summary["median_abs_h"] == pytest.approx(0.3, abs=2e-4)
    assert summary["interface_fraction"] == 0.0


def test_sphere_grid_weights_are_area_weights():
    sphere = Sphere(dim=2, radius=1.0, ambient_dim=3)
    field = _field(RadialClassifier(1.3), sphere, resolution=40)
    polar = field.u[:, 0]
    # the cap polar < pi/4 (exactly 10 of the 40 grid rows) has area fraction (1 - cos(pi/4)) / 2
    assert field.weight[polar < np.pi / 4].sum() == pytest.approx((1 - np.cos(np.pi / 4)) / 2, abs=0.002)


def test_weighted_median_matches_numpy_with_equal_weights():
    values = np.random.default_rng(0).standard_normal(101)
    assert weighted_median(values, np.ones(101)) == np.median(values)


def test_stretch_spectrum_of_a_linear_feature_map():
    k, n, m = 3, 7, 5
    flat = Flat(dim=k, ambient_dim=n, embedding="random", embedding_seed=9)
    matrix = torch.as_tensor(np.random.default_rng(2).standard_normal((m, n)))
    model = LinearFeatures(matrix)
    u = flat.sample_chart(20, np.random.default_rng(3))
    x = torch.as_tensor(flat.immersion(u))
    jacobians = feature_jacobians(model, x)
    torch.testing.assert_close(jacobians, matrix.expand(20, m, n))
    bases = torch.as_tensor(flat.tangent_basis(u))
    spectra = stretch_spectra(jacobians, bases)
    singular_values = np.linalg.svd(matrix.numpy(), compute_uv=False)
    np.testing.assert_allclose(spectra["mean_singular_values"], singular_values, rtol=1e-10)
    assert spectra["median_stretch_ratio"] == pytest.approx(singular_values[0] / singular_values[-1])
    basis = flat.tangent_basis(u[0])
    normal_projector = np.eye(n) - basis @ basis.T
    expected_share = np.linalg.norm(matrix.numpy() @ normal_projector) ** 2 / np.linalg.norm(matrix.numpy()) ** 2
    assert spectra["normal_energy_share"] == pytest.approx(expected_share, rel=1e-10)
    top = np.linalg.svd(matrix.numpy())[2][0]
    assert spectra["top_direction_tangent_fraction"] == pytest.approx(np.linalg.norm(basis.T @ top), rel=1e-8)


@pytest.mark.parametrize("ratio, expected", [(0.3, "perpendicular (dimpled)"), (1.0, "like a random direction"),
                                             (2.6, "towards the manifold (more than random)"),
                                             (9.5, "along the manifold")])
def test_verdict_reads_the_tangent_ratio_in_four_bands(ratio, expected):
    from simulator.config.scene import ThresholdSpec
    from simulator.stages.verdict import verdict_rows

    baseline = math.sqrt(20 / 784)  # Fashion-MNIST's k = 20 in n = 784
    summary = {"tangent": {"ratio_to_baseline": ratio, "rms_tau": ratio * baseline, "baseline_rms_tau": baseline}}
    row = next(r for r in verdict_rows(summary, ThresholdSpec().model_dump()) if r["measurement"].startswith("RMS tau"))
    assert row["reading"] == expected
