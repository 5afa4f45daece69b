"""The attack report: dimension-only predictions, MS and its interval, end to end on a run."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import load_run, load_scene, run_scene
from simulator.stages.attack import (
    bootstrap_interval,
    dimension_only_ratio,
    manifold_specificity,
    random_alignment_baseline,
)

from conftest import SCENES


@pytest.mark.parametrize("k,n", [(2, 3), (10, 100), (50, 60)])
def test_dimension_only_ratio_matches_monte_carlo(k, n):
    """Second method: project a fixed unit w onto many Haar-random k-dim subspaces."""
    rng = np.random.default_rng(0)
    w = np.zeros(n)
    w[0] = 1.0
    share = []
    for _ in range(4000):
        q, _ = np.linalg.qr(rng.standard_normal((n, k)))
        share.append(np.sum(q[0] ** 2))  # ||P_B w||^2
    share = np.asarray(share)
    assert dimension_only_ratio(k, n, inside=True) == pytest.approx(np.median(1 / np.sqrt(share)), rel=0.03)
    assert dimension_only_ratio(k, n, inside=False) == pytest.approx(np.median(1 / np.sqrt(1 - share)), rel=0.03)


def test_random_alignment_baseline_matches_monte_carlo():
    rng = np.random.default_rng(1)
    for n in (3, 100):
        u = rng.standard_normal((200000, n))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        assert random_alignment_baseline(n) == pytest.approx(np.abs(u[:, 0]).mean(), rel=0.01)


def test_manifold_specificity_closed_form_and_interval():
    distances = {"on": np.full(50, 4.0), "off": np.full(50, 1.0),
                 "random_on": np.full(50, 2.0), "random_off": np.full(50, 1.0)}
    assert manifold_specificity(distances) == pytest.approx(2.0)
    low, high = bootstrap_interval(distances, 200, 0.95, np.random.default_rng(0))
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    # A mode that mostly finds nothing makes MS undefined rather than a wrong number.
    distances["off"] = np.where(np.arange(50) < 30, np.nan, 1.0)
    assert manifold_specificity(distances) is None


def test_bootstrap_interval_covers_the_spread():
    rng = np.random.default_rng(3)
    distances = {mode: rng.lognormal(0, 0.3, 400) * scale
                 for mode, scale in (("on", 3.0), ("off", 1.0), ("random_on", 3.0), ("random_off", 1.0))}
    value = manifold_specificity(distances)
    low, high = bootstrap_interval(distances, 500, 0.95, np.random.default_rng(0))
    assert low < value < high and low < 1.0 < high  # same law on both sides: MS = 1 is plausible


@pytest.mark.slow
def test_subspace_highdim_random_ratio_matches_the_dimension_only_prediction(tmp_path):
    """The issue's bar: a near-linear model on k=10 in n=100 gives d_rand_on/d_free close to
    the linear-margin prediction (median of 1/sqrt(Beta(5, 45)) = 3.25)."""
    scene = load_scene(SCENES / "subspace_highdim.yaml",
                       overrides={"train.device": "cpu", "measure.n_points": 100, "measure.height_every": 12,
                                  "measure.final_height_resolution": 16, "render.first_look": False})
    run = load_run(run_scene(scene, tmp_path, progress=False).path)
    report = run.metrics["attacks"]["final"]
    random_on = report["modes"]["random_on"]
    assert random_on["ratio_to_free"] == pytest.approx(random_on["dimension_only_ratio"], rel=0.15)
    assert report["deepfool_check"]["share_pgd_within_1pct_or_shorter"] > 0.9
    low, high = report["manifold_specificity_interval"]
    assert low <= report["manifold_specificity"] <= high
    with np.load(run.path / "attack_distances.npz") as stored:
        free = np.where(np.isnan(stored["free"]), np.inf, stored["free"])
        assert np.median(free) == pytest.approx(report["modes"]["free"]["median_distance_counting_failures"])
        assert np.median(stored["lower_bound_free"]) == pytest.approx(report["modes"]["free"]["median_lower_bound"])
        assert np.all(stored["lower_bound_free"] <= free)
