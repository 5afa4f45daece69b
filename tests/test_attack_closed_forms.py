"""Closed forms for the attacks: greedy projected PGD, bounded PGD and DeepFool.

Every test here runs an attack of `simulator.attacks.greedy_pgd`, `simulator.attacks.bounded_pgd`
or `simulator.attacks.deepfool` on a hand-built model whose answer is known exactly:

- a two-class linear model with margin f(x) = w.x + b: the minimal L2 distance is |f| / ||w||, in a
  subspace with orthonormal basis B it is |f| / ||B^T w|| (none when B^T w = 0), and in B's
  complement |f| / ||w - B B^T w|| (DESIGN.md section 4, item 3);
- axis-aligned weights and dyadic steps, where the greedy walk, the bisection and the normal
  rounds are exact in binary floating point, so distances and evaluation counts are compared
  exactly (ceil(d / step) steps, ceil(t* 2^r) / 2^r after r bisections);
- multi-class linear models (the nearest rival boundary, or the nearest among DeepFool's
  candidate classes, ties included), bent, parabolic and circular boundaries whose nearest point
  or ray crossing is known (1 - x_1, a cubic's root, a quadratic's root), and flat (ReLU-dead)
  regions where no attack can move;
- bounded PGD on a linear model, which walks a straight line: delta = min(steps * step, eps)
  P w / ||P w||, so the margin moves by exactly min(steps * step, eps) ||P w||.

Bookkeeping is checked as well: steps, success flags, labels, evaluation counts, the relative
tolerance below which a subspace holds no direction, which DeepFool restart replaces the first
result (a scripted `_run`), and that every tensor an attack creates follows the inputs' device
(run once more with torch's default device set to `meta`).

Sizes are tiny (at most 5 points in R^5) and nothing is trained: the tests take about 2 s on top
of importing torch (docs/mutation/pgd_deepfool.md lists the mutants they kill and those left).
"""

from __future__ import annotations

import math
import re
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from simulator.attacks.bounded_pgd import BoundedProjectedPGD, bounded_budget
from simulator.attacks.deepfool import DeepFoolL2
from simulator.attacks.greedy_pgd import AttackResult, GreedyProjectedPGD, as_batch, refine_by_bisection
from simulator.attacks.operators import DenseBasis
from simulator.attacks.subspaces import coordinate_subsets, project_onto, random_subspace_bases

F64 = torch.float64


# --------------------------------------------------------------------------- hand-built models


def two_class(w, b: float) -> nn.Linear:
    """nn.Linear(n, 2) in float64 with logits (-f/2, f/2), so the margin z_1 - z_0 is f(x) = w.x + b
    (label 1 where f > 0). Both logits move, so sums and differences of logits differ."""
    w = torch.as_tensor(w, dtype=F64)
    model = nn.Linear(len(w), 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.bias.copy_(torch.tensor([-b / 2, b / 2], dtype=F64))
    return model.eval().requires_grad_(False)


def linear(weight, bias) -> nn.Linear:
    """nn.Linear with the given (C, n) weight and (C,) bias, float64, frozen."""
    weight, bias = torch.as_tensor(weight, dtype=F64), torch.as_tensor(bias, dtype=F64)
    model = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(bias)
    return model.eval().requires_grad_(False)


def points_at_margin(w, b: float, margins, seed: int = 0) -> torch.Tensor:
    """Points x_i (random in the other directions) with w.x_i + b = margins[i]."""
    w = torch.as_tensor(w, dtype=F64)
    y = torch.randn(len(margins), len(w), generator=torch.Generator().manual_seed(seed), dtype=F64)
    target = torch.as_tensor(margins, dtype=F64)
    return y + ((target - (y @ w + b)) / (w @ w))[:, None] * w


class Bent(nn.Module):
    """Margin g(x) = (x_1 - 1)(1 + x_0^2), logits (-g/2, g/2): the boundary is the line x_1 = 1, so
    the nearest boundary point of x is at distance |1 - x_1|, but off the line the gradient is tilted
    towards x_0 = 0, so greedy paths and DeepFool's linearisations meet the line elsewhere."""

    def forward(self, x):
        g = (x[:, 1] - 1) * (1 + x[:, 0] ** 2)
        return torch.stack([-g / 2, g / 2], dim=1)


class Parabola(nn.Module):
    """Logits (0, x_1 - x_0^2 - 1/2): two classes split by the parabola x_1 = x_0^2 + 1/2."""

    def forward(self, x):
        g = x[:, 1] - x[:, 0] ** 2 - 0.5
        return torch.stack([torch.zeros_like(g), g], dim=1)


class Dead(nn.Module):
    """Logits (1, relu(x_0 - 5)): at x_0 < 5 label 0 and every input gradient is exactly zero (a
    dead ReLU), so no attack has a direction to move in."""

    def forward(self, x):
        return torch.stack([torch.ones_like(x[:, 0]), torch.relu(x[:, 0] - 5)], dim=1)


class Disk(nn.Module):
    """Logits (0, 1 - ||x||^2): class 1 inside the unit disk. A ray x + t u from outside meets the
    circle first at t = -x.u - sqrt((x.u)^2 - ||x||^2 + 1)."""

    def forward(self, x):
        return torch.stack([torch.zeros_like(x[:, 0]), 1 - (x**2).sum(1)], dim=1)


class ThreeMargins(nn.Module):
    """Logits (-g/2, g/2) with a margin chosen by x_2, which moves along e_0 never change:
    x_2 = 0: g = 1e-6 (x_0 - 0.5) + 10 x_1 (gradient (1e-6, 10, 0): 1e-7 of it along e_0);
    x_2 = 1: g = 5e-6 (x_0 - 0.5) (a tiny gradient, all of it along e_0);
    otherwise g = relu(x_0 - 5) (a dead ReLU: gradient exactly 0)."""

    def forward(self, x):
        g = torch.where(x[:, 2] == 0, 1e-6 * (x[:, 0] - 0.5) + 10 * x[:, 1],
                        torch.where(x[:, 2] == 1, 5e-6 * (x[:, 0] - 0.5), torch.relu(x[:, 0] - 5)))
        return torch.stack([-g / 2, g / 2], dim=1)


def ray_meets_unit_circle(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """First t > 0 with ||x + t u|| = 1 for unit rows u (x outside the disk)."""
    xu = (x * u).sum(1)
    return -xu - torch.sqrt(xu**2 - (x**2).sum(1) + 1)


def parabola_distance(point) -> float:
    """Nearest distance from (a, b) to the parabola x_1 = x_0^2 + 1/2: the real roots of the
    stationarity cubic 2 s^3 + (2 - 2 b) s - a = 0 of (s - a)^2 + (s^2 + 1/2 - b)^2."""
    a, b = float(point[0]), float(point[1])
    roots = np.roots([2.0, 0.0, 2.0 - 2.0 * b, -a])
    real = roots[np.abs(roots.imag) < 1e-9].real
    return float(np.min(np.hypot(real - a, real**2 + 0.5 - b)))


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=F64))[0]


class _NoWarnings:
    """Turn every warning (numpy's RuntimeWarnings included) into an error inside the block."""

    def __enter__(self):
        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)


def close(actual: torch.Tensor, expected, rtol: float = 0.0, atol: float = 0.0, equal_nan: bool = False):
    """assert_allclose of a tensor against a tensor of the same dtype and shape (or numbers). (Not
    torch.testing.assert_close: its first call imports torch.distributed, 2 s on two busy cores.)"""
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.device == expected.device, (actual.dtype, expected.dtype)
        expected = expected.detach().cpu().numpy()
    np.testing.assert_allclose(actual.detach().cpu().numpy(), expected, rtol=rtol, atol=atol, equal_nan=equal_nan)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tensors of a few numbers: torch's intra-op threads only add contention (up to a second per
    test on two busy cores), so this module runs on one and restores the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _exact(message: str) -> str:
    """A `pytest.raises(match=...)` pattern that accepts exactly `message`."""
    return "^" + re.escape(message) + "$"


# --------------------------------------------------------------------------- greedy PGD: the walk

# f(x) = 2 x_0 - 6/5: the boundary is x_0 = 0.6. Point A (x_0 = 0, label 0) is 0.6 from it, point B
# (x_0 = 1, label 1) 0.4. With step 1/4 along +-e_0 every position is a dyadic number, so the walk,
# the bisections and the normal rounds below are exact in binary floating point.
AXIS_W, AXIS_B = (2.0, 0.0, 0.0), -1.2
AXIS_X = torch.tensor([[0.0, 0.3, -0.7], [1.0, -0.2, 0.5]], dtype=F64)


def test_greedy_walk_takes_ceil_of_distance_over_step_steps_of_exact_length():
    """Free mode, f = 2 x_0 - 1.2, step 1/4, no refinement: A (distance 0.6) needs ceil(0.6 / 0.25) = 3
    steps and ends at delta = +0.75 e_0, B (distance 0.4) ceil(0.4 / 0.25) = 2 steps and ends at
    -0.5 e_0; the labels flip (0 -> 1, 1 -> 0). Gradients: one per active sample per backward pass,
    sum(steps + 1) minus one for the samples still active at the last pass (3 + 3); forwards:
    sum(steps + 1) (4 + 3) plus one per success for the label at the end of the segment."""
    model = two_class(AXIS_W, AXIS_B)
    for loss in ("margin", "ce"):  # two classes, linear: CE's gradient is parallel to w as well
        result = GreedyProjectedPGD(model, step_size=0.25, max_steps=10, refine_steps=0, loss=loss,
                                    normal_rounds=2)(AXIS_X)
        assert result.steps.tolist() == [3, 2] and result.success.tolist() == [True, True]
        assert result.success.dtype == torch.bool and result.steps.dtype == torch.long
        assert torch.equal(result.delta, torch.tensor([[0.75, 0, 0], [-0.5, 0, 0]], dtype=F64))
        assert result.distance.tolist() == [0.75, 0.5]
        assert result.original_label.tolist() == [0, 1] and result.adversarial_label.tolist() == [1, 0]
        assert result.gradient_evaluations == 6  # refine_steps = 0 turns the normal rounds off
        assert result.forward_evaluations == 7 + 2
        assert result.mode == "free" and result.basis is None


def test_greedy_bisection_and_normal_rounds_are_exact_on_dyadic_steps():
    """Refinement by r = 4 bisections of [0, 1] along delta: the crossing t* = 0.8 (both points)
    becomes ceil(0.8 * 16) / 16 = 13/16, so the distances are 0.75 * 13/16 = 0.609375 and
    0.5 * 13/16 = 0.40625. Normal round 1 (the normal is +-e_0, parallel to the ray) bisects
    [0, current] 2r = 8 times: 253/256 of it, 0.60223388671875 and 0.4014892578125. Round 2 finds
    256/256 (no improvement) for eta = 1, 1/2 and 1/4. Evaluations: gradients 6 + 2 rounds x 2;
    forwards 7 (walk) + 2 x 5 (bisection) + 2 x (1 + 9) (round 1, eta = 1) + 3 x 2 x (1 + 9) (round 2)."""
    model = two_class(AXIS_W, AXIS_B)
    refined = GreedyProjectedPGD(model, step_size=0.25, max_steps=10, refine_steps=4, normal_rounds=0)(AXIS_X)
    assert refined.distance.tolist() == [0.609375, 0.40625]
    assert torch.equal(refined.delta, torch.tensor([[0.609375, 0, 0], [-0.40625, 0, 0]], dtype=F64))
    assert refined.gradient_evaluations == 6 and refined.forward_evaluations == 7 + 10
    assert refined.adversarial_label.tolist() == [1, 0]

    rounds = GreedyProjectedPGD(model, step_size=0.25, max_steps=10, refine_steps=4, normal_rounds=2)(AXIS_X)
    assert rounds.distance.tolist() == [0.609375 * 253 / 256, 0.40625 * 253 / 256]
    assert rounds.distance.tolist() == [0.60223388671875, 0.4014892578125]
    assert torch.equal(rounds.delta, torch.tensor([[0.60223388671875, 0, 0], [-0.4014892578125, 0, 0]], dtype=F64))
    assert rounds.adversarial_label.tolist() == [1, 0] and rounds.steps.tolist() == [3, 2]
    assert rounds.gradient_evaluations == 6 + 2 * 2
    assert rounds.forward_evaluations == 7 + 10 + 20 + 60
    # one round: only the improving eta = 1 pass
    one = GreedyProjectedPGD(model, step_size=0.25, max_steps=10, refine_steps=4, normal_rounds=1)(AXIS_X)
    assert one.distance.tolist() == [0.60223388671875, 0.4014892578125]
    assert one.gradient_evaluations == 8 and one.forward_evaluations == 7 + 10 + 20


def test_greedy_refined_distance_matches_the_closed_form_on_both_sides():
    """f = 3 x_0 + 4 x_1 - 0.5 in R^5 (||w|| = 5), points at margins -2.3, 1.15, -0.2, 4.55: the
    free distance |f| / 5 = 0.46, 0.23, 0.04, 0.91. The walk with step 0.1 (no refinement) ends at
    ceil(d / 0.1) steps of exactly 0.1 along -sign(f) w / 5; 40 bisections bring it to d within 1e-12,
    with x + delta just across the boundary (sign of f flipped, |f(x + delta)| < 1e-10)."""
    w, b = torch.tensor([3.0, 4.0, 0.0, 0.0, 0.0], dtype=F64), -0.5
    margins = torch.tensor([-2.3, 1.15, -0.2, 4.55], dtype=F64)
    x = points_at_margin(w, b, margins, seed=1)
    model = two_class(w, b)
    d = margins.abs() / 5
    walk = GreedyProjectedPGD(model, step_size=0.1, max_steps=100, refine_steps=0)(x)
    steps = torch.ceil(d / 0.1 - 1e-9).long()
    assert walk.steps.tolist() == steps.tolist() == [5, 3, 1, 10]
    close(walk.delta, (0.1 * steps.double() * -torch.sign(margins))[:, None] * w / 5, rtol=0,
                               atol=1e-15)
    refined = GreedyProjectedPGD(model, step_size=0.1, max_steps=100, refine_steps=40, normal_rounds=0)(x)
    close(refined.distance, d, rtol=0, atol=1e-12)
    after = (x + refined.delta) @ w + b
    assert (torch.sign(after) == -torch.sign(margins)).all() and after.abs().max() < 1e-10
    assert refined.original_label.tolist() == [0, 1, 0, 1] and refined.adversarial_label.tolist() == [1, 0, 1, 0]


def test_greedy_reaches_the_boundary_at_exactly_max_steps_but_not_beyond():
    """f = 2 x_0 - 1.2 and step 1/4: a point 0.6 away flips at step 3, so with max_steps = 3 it is a
    success at the last check; a point 0.85 away (x_0 = -0.25) needs 4 steps and fails: success False,
    steps = max_steps, distance NaN, its walk (3 steps, 0.75 e_0) kept and its label unchanged.
    Gradients 3 + 3, forwards 4 + 4 and one bisection forward for the success."""
    model = two_class(AXIS_W, AXIS_B)
    x = torch.tensor([[0.0, 0.0, 0.0], [-0.25, 1.0, 0.0]], dtype=F64)
    result = GreedyProjectedPGD(model, step_size=0.25, max_steps=3, refine_steps=0)(x)
    assert result.success.tolist() == [True, False] and result.steps.tolist() == [3, 3]
    assert result.distance[0] == 0.75 and math.isnan(result.distance[1])
    assert torch.equal(result.delta, torch.tensor([[0.75, 0, 0], [0.75, 0, 0]], dtype=F64))
    assert result.adversarial_label.tolist() == [1, 0]
    assert result.gradient_evaluations == 6 and result.forward_evaluations == 8 + 1
    # nothing found, normal rounds on: they spend nothing
    far = GreedyProjectedPGD(model, step_size=0.25, max_steps=3, refine_steps=5, normal_rounds=3)(x[1:])
    assert far.success.tolist() == [False] and far.gradient_evaluations == 3 and far.forward_evaluations == 4


def test_greedy_margin_and_cross_entropy_objectives():
    """The quantity the walk decreases: margin z_y - max_{j != y} z_j, or minus the cross-entropy
    of y (log softmax_y). Logits (1, 3, 2) with y = 1: margin 1, -CE = 3 - log(e + e^3 + e^2);
    logits (0.5, -1, 0.25) with y = 0: margin 0.25."""
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.25]], dtype=F64)
    label = torch.tensor([1, 0])
    margin = GreedyProjectedPGD(nn.Identity(), loss="margin")._objective(logits, label)
    assert margin.tolist() == [1.0, 0.25]
    ce = GreedyProjectedPGD(nn.Identity(), loss="ce")._objective(logits, label)
    expected = [3 - math.log(math.e + math.e**3 + math.e**2),
                0.5 - math.log(math.exp(0.5) + math.exp(-1) + math.exp(0.25))]
    np.testing.assert_allclose(ce.numpy(), expected, rtol=1e-14)


# --------------------------------------------------------------------------- greedy PGD: subspaces


def test_greedy_per_row_subspaces_match_the_closed_form():
    """Mode 'on' with a different 2-D subspace of R^5 per point (DenseBasis (N, n, k)): d_i =
    |f_i| / ||B_i^T w||. Point 2's basis is orthogonal to w (B^T w = 0): it cannot move (success
    False, steps 0, delta 0, NaN). Point 3 is out of reach of max_steps (failure, steps = 20). The
    others finish at different steps, each delta stays in span(B_i) and the normal rounds (on the
    successes only) keep the closed form. Mode 'off' with the same bases: |f_i| / ||w - B_i B_i^T w||."""
    w, b = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.5], dtype=F64), 0.25
    margins = torch.tensor([-0.6, 1.3, -0.9, -40.0, 0.15], dtype=F64)
    x = points_at_margin(w, b, margins, seed=2)
    bases = torch.stack([orthonormal(5, 2, seed) for seed in range(5)])
    null = torch.linalg.svd(w[None])[2][1:3].T  # two directions orthogonal to w
    bases[2] = null
    model = two_class(w, b)
    attack = GreedyProjectedPGD(model, mode="on", step_size=0.05, max_steps=20, refine_steps=30, normal_rounds=2)
    result = attack(x, DenseBasis(bases))
    tangent = torch.einsum("ink,n->ik", bases, w).norm(dim=1)
    expected = margins.abs() / tangent
    assert result.success.tolist() == [True, True, False, False, True]
    assert result.steps[2] == 0 and result.steps[3] == 20
    assert torch.equal(result.delta[2], torch.zeros(5, dtype=F64))
    assert torch.isnan(result.distance[2:4]).all()
    found = result.success
    close(result.distance[found], expected[found], rtol=1e-9, atol=0)
    assert len(set(result.steps[found].tolist())) == 3  # they finished at different steps
    inside = torch.einsum("ink,ilk,il->in", bases, bases, result.delta)
    close(inside, result.delta, rtol=0, atol=1e-12)
    assert torch.equal(result.basis.bases, bases)
    # the same dense bases passed as a tensor, and the complement
    close(attack(x, bases).distance, result.distance, rtol=0, atol=0, equal_nan=True)
    off = GreedyProjectedPGD(model, mode="off", step_size=0.05, max_steps=20, refine_steps=30)(x[[0, 1, 4]],
                                                                                              bases[[0, 1, 4]])
    normal = (w - torch.einsum("ink,ilk,l->in", bases[[0, 1, 4]], bases[[0, 1, 4]], w)).norm(dim=1)
    close(off.distance, margins[[0, 1, 4]].abs() / normal, rtol=1e-9, atol=0)


def test_greedy_stops_where_the_projected_gradient_is_below_the_relative_tolerance():
    """||P g|| <= 1e-6 ||g|| counts as "no direction in this subspace". With ||w|| = 10 and the 1-D
    subspace spanned by e_1 cos a + e_0 sin a, ||P w|| / ||w|| = sin a: at 1e-7 the point is stuck at
    step 0 (nothing found), at 1e-5 it moves (and fails after max_steps, its boundary being 10^5
    times farther than in free space). A dead ReLU (gradient exactly 0, 0 <= 0) is stuck too, in
    free mode, with no NaN in its perturbation."""
    w = torch.tensor([10.0, 0.0, 0.0], dtype=F64)
    model = two_class(w, -1.0)
    x = torch.zeros(2, 3, dtype=F64)
    bases = torch.zeros(2, 3, 1, dtype=F64)
    for row, ratio in enumerate((1e-7, 1e-5)):
        bases[row, 0, 0], bases[row, 1, 0] = ratio, math.sqrt(1 - ratio**2)
    result = GreedyProjectedPGD(model, mode="on", step_size=0.01, max_steps=2, refine_steps=0)(x, bases)
    assert result.success.tolist() == [False, False]
    assert result.steps.tolist() == [0, 2]
    assert result.delta[0].abs().max() == 0 and result.delta[1].norm() == pytest.approx(0.02, rel=1e-12)
    assert result.gradient_evaluations == 2 + 1

    # the tolerance is per point: with the CE loss, a point deep in its class (margin -30) has a
    # gradient 1e13 times shorter than one near the boundary, and still moves if 1e-5 of it is in
    # its subspace
    x = torch.tensor([[0.09, 0.0, 0.0], [-2.9, 0.0, 0.0]], dtype=F64)  # f = -0.1, -30
    bases[0, :, 0] = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    ce = GreedyProjectedPGD(model, mode="on", step_size=0.02, max_steps=2, refine_steps=0, loss="ce")(x, bases)
    assert ce.success.tolist() == [True, False] and ce.steps.tolist() == [1, 2]
    assert ce.delta[1].norm() == pytest.approx(0.04, rel=1e-12)

    dead = GreedyProjectedPGD(Dead(), step_size=0.1, max_steps=5, refine_steps=3)(torch.zeros(2, 4, dtype=F64))
    assert dead.success.tolist() == [False, False] and dead.steps.tolist() == [0, 0]
    assert torch.equal(dead.delta, torch.zeros(2, 4, dtype=F64)) and torch.isnan(dead.distance).all()
    assert dead.gradient_evaluations == 2 and dead.forward_evaluations == 2


def test_greedy_coordinate_and_random_modes_use_the_seeded_subspaces():
    """Mode 'coordinate_on' with dim 2 and seed 7: the subspace of point i is the coordinate set
    `coordinate_subsets(N, n, 2, seed=7)` gives it, and d_i = |f_i| / ||w restricted to it||.
    Mode 'random_off' with dim 1 and seed 3: the avoided line is `random_subspace_bases(..., seed=3)`,
    d_i = |f_i| / ||w - (b_i.w) b_i||."""
    w, b = torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0], dtype=F64), 0.1
    margins = torch.tensor([-0.3, 0.45, -0.2], dtype=F64)
    x = points_at_margin(w, b, margins, seed=4)
    model = two_class(w, b)
    result = GreedyProjectedPGD(model, mode="coordinate_on", dim=2, seed=7, step_size=0.05, max_steps=100,
                                refine_steps=30, normal_rounds=0)(x)
    indices = coordinate_subsets(3, 5, 2, seed=7).indices
    assert torch.equal(result.basis.indices, indices)
    restricted = w[indices].norm(dim=1)
    close(result.distance, margins.abs() / restricted, rtol=1e-9, atol=0)
    outside = torch.ones(3, 5, dtype=torch.bool)
    outside[torch.arange(3)[:, None], indices] = False
    assert (result.delta[outside] == 0).all()

    off = GreedyProjectedPGD(model, mode="random_off", dim=1, seed=3, step_size=0.05, max_steps=100,
                             refine_steps=30, normal_rounds=0)(x)
    line = random_subspace_bases(3, 5, 1, seed=3, dtype=F64)[:, :, 0]
    assert torch.equal(off.basis.basis()[:, :, 0], line)
    rest = (w - (line @ w)[:, None] * line).norm(dim=1)
    close(off.distance, margins.abs() / rest, rtol=1e-9, atol=0)


# --------------------------------------------------------------------------- greedy PGD: curved boundaries


def test_greedy_normal_rounds_reach_the_nearest_point_of_a_bent_boundary():
    """Bent boundary x_1 = 1 with a tilted margin gradient: the greedy path meets the line at a
    point farther than 1 - x_1 (by 4 to 19 percent here); one normal round turns the ray onto the
    normal e_1 and bisects it to 1 - x_1 (within 1e-12), for three points and for one alone. Each
    round spends one gradient per success."""
    x = torch.tensor([[0.8, 0.3, 0.0], [-1.2, -0.5, 0.1], [0.5, 0.0, -0.2]], dtype=F64)
    exact = 1 - x[:, 1]
    greedy = GreedyProjectedPGD(Bent(), step_size=0.05, max_steps=100, refine_steps=30, normal_rounds=0)(x)
    assert ((greedy.distance / exact - 1) > 0.03).all()
    one = GreedyProjectedPGD(Bent(), step_size=0.05, max_steps=100, refine_steps=30, normal_rounds=1)(x)
    close(one.distance, exact, rtol=1e-12, atol=0)
    assert one.gradient_evaluations == greedy.gradient_evaluations + 3
    assert torch.equal(one.steps, greedy.steps)
    # the final perturbation is along e_1, and x + delta is across the boundary
    close(one.delta[:, [0, 2]], torch.zeros(3, 2, dtype=F64), rtol=0, atol=1e-8)
    assert ((x + one.delta)[:, 1] >= 1).all() and one.adversarial_label.tolist() == [1, 1, 1]
    single = GreedyProjectedPGD(Bent(), step_size=0.05, max_steps=100, refine_steps=30, normal_rounds=1)(x[1:2])
    close(single.distance, exact[1:2], rtol=1e-12, atol=0)


def test_greedy_normal_rounds_on_a_parabola_match_the_cubic_root():
    """Parabola x_1 = x_0^2 + 1/2: the nearest boundary distance is the smallest of the real
    stationary points of a cubic. The greedy chord is longer (by more than 0.5 percent for these
    points); five normal rounds (here each turns the ray fully onto the normal, eta = 1) bring it
    within 1e-4 relative, never longer than the greedy one, and delta's length is the distance."""
    x = torch.tensor([[1.0, 0.2, 0.0], [-0.6, 1.2, 0.0]], dtype=F64)
    nearest = torch.tensor([parabola_distance(p) for p in x], dtype=F64)
    greedy = GreedyProjectedPGD(Parabola(), step_size=0.02, refine_steps=30, normal_rounds=0)(x)
    aligned = GreedyProjectedPGD(Parabola(), step_size=0.02, refine_steps=30, normal_rounds=5)(x)
    assert (greedy.distance / nearest - 1).max() > 5e-3
    assert (aligned.distance <= greedy.distance).all()
    close(aligned.distance, nearest, rtol=1e-4, atol=0)
    assert torch.equal(aligned.delta.norm(dim=1), aligned.distance)


def test_greedy_normal_round_tries_eta_one_half_and_a_quarter_in_turn():
    """One normal round from hand-placed boundary points p = (sin a, -cos a) (just inside the unit
    disk) found from x = (0, -s): the ray is turned to normalize(u + eta (nu - u)), u = (p - x) / |p - x|,
    nu = -p the inward normal, for eta = 1, 1/2, 1/4 until x + |p - x| turned is inside. For (s, a) =
    (1.2, 30 deg) eta = 1 crosses, (2, 45 deg) only from eta = 1/2, (3, 60 deg) only at 1/4. The crossing
    is then bisected 2r = 30 times on [0, |p - x|]: the new distance is the ray's first meeting with the
    circle (closed form) to 4^-15 |p - x|. A failed point (success False) is left alone. Cost: one
    gradient per success, and forwards 3 + 2 + 1 (rays tried) + 3 x 31 (bisections). Alone, the
    (3, 60 deg) point needs all three etas as well."""
    s_a = [(1.2, 30.0), (2.0, 45.0), (3.0, 60.0), (2.0, 10.0)]
    x = torch.tensor([[0.0, -s] for s, _ in s_a], dtype=F64)
    angle = torch.tensor([math.radians(a) for _, a in s_a], dtype=F64)
    p = (1 - 1e-9) * torch.stack([torch.sin(angle), -torch.cos(angle)], dim=1)
    delta = p - x
    current = delta.norm(dim=1)
    ray, normal = delta / current[:, None], -p / p.norm(dim=1, keepdim=True)
    expected = []
    for row, eta in enumerate((1.0, 0.5, 0.25)):
        turned = ray[row] + eta * (normal[row] - ray[row])
        turned = turned / turned.norm()
        expected.append(turned * ray_meets_unit_circle(x[row:row + 1], turned[None])[0])
    attack = GreedyProjectedPGD(Disk(), refine_steps=15)

    def align(rows, success):
        d, dist = delta[rows].clone(), current[rows].clone()
        adversarial = torch.ones(len(rows), dtype=torch.long)
        cost = attack._align_with_normal(x[rows], d, dist, torch.zeros(len(rows), dtype=torch.long), adversarial,
                                         torch.tensor(success), None, None)
        return d, dist, cost

    d, dist, cost = align([0, 1, 2, 3], [True, True, True, False])
    assert cost == (3, 6 + 3 * 31)
    for row in range(3):
        exact = expected[row].norm()
        assert exact < current[row] and exact <= dist[row] <= exact + current[row] * 4.0**-15
        close(d[row], expected[row], rtol=0, atol=1e-8)
        assert d[row].norm() == pytest.approx(float(dist[row]), rel=1e-15)
    assert torch.equal(d[3], delta[3]) and dist[3] == current[3]
    d, dist, cost = align([2], [True])
    assert cost == (1, 3 + 31)
    close(d[0], expected[2], rtol=0, atol=1e-8)


def test_greedy_normal_round_applies_the_relative_tolerance_per_point():
    """A normal round in mode 'on' (subspace e_0) turns a ray only where the projected gradient at
    the found point is above 1e-6 of that point's own gradient. Found points 0.6 along e_0 from x
    (boundary at 0.5): x_2 = 0, gradient (1e-6, 10, 0): 1e-7 of it in the subspace, left alone at
    0.6; x_2 = 1, gradient (5e-6, 0, 0) (tiny, but all in the subspace): bisected to 0.5 (within
    0.6 x 2^-20); x_2 = 2, gradient 0: left alone (0 is not above 0). Cost: 3 gradients, 1 + 21
    forwards (one ray and its 2r = 20 bisections)."""
    x = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 2.0]], dtype=F64)
    delta = torch.tensor([[0.6, 0.0, 0.0]] * 3, dtype=F64)
    distance = torch.full((3,), 0.6, dtype=F64)
    attack = GreedyProjectedPGD(ThreeMargins(), mode="on", refine_steps=10)
    basis = DenseBasis(torch.eye(3, dtype=F64)[:, :1])
    label, adversarial = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    cost = attack._align_with_normal(x, delta, distance, label, adversarial, torch.ones(3, dtype=torch.bool), basis,
                                     project_onto)
    assert cost == (3, 1 + 21)
    assert distance[0] == 0.6 and distance[2] == 0.6
    assert 0.5 <= distance[1] <= 0.5 + 0.6 * 2.0**-20
    assert delta[1, 0] == distance[1] and delta[1, 1:].abs().max() == 0


# --------------------------------------------------------------------------- shared pieces


def test_refine_by_bisection_scales_successes_to_the_dyadic_crossing():
    """In R^1 with f = 2 x - 1.2 (boundary 0.6): from x = 0 along delta = 1 the crossing is t* = 0.6,
    so r bisections give ceil(0.6 2^r) / 2^r (r = 3: 5/8; r = 5: 20/32); from x = 1 along -1 it is
    0.4 (r = 3: 4/8; r = 5: 13/32). A failure keeps its delta and gets NaN; the
    forward count is (r + 1) per success; with no success it is 0."""
    model = two_class([2.0], -1.2)
    x = torch.tensor([[0.0], [1.0], [0.0]], dtype=F64)
    label = torch.tensor([0, 1, 0])
    for r, scales in ((3, [5 / 8, 4 / 8]), (5, [20 / 32, 13 / 32])):
        delta = torch.tensor([[1.0], [-1.0], [0.3]], dtype=F64)
        success = torch.tensor([True, True, False])
        out, distance, adversarial, forwards = refine_by_bisection(model, x, delta, label, success, r)
        assert out[:2, 0].tolist() == [scales[0], -scales[1]] and out[2, 0] == 0.3
        assert distance[:2].tolist() == scales and math.isnan(distance[2])
        assert adversarial.tolist() == [1, 0, 0] and label.tolist() == [0, 1, 0]
        assert forwards == 2 * (r + 1)
    none = refine_by_bisection(model, x, torch.ones(3, 1, dtype=F64), label, torch.zeros(3, dtype=torch.bool), 4)
    assert torch.isnan(none[1]).all() and none[2].tolist() == [0, 1, 0] and none[3] == 0


def test_attack_result_summary_by_hand():
    """Successes at distances 1, 3, 2 (steps 1, 3, 2) and one failure: success rate 3/4, median 2,
    mean 2, median steps 2. A float32 pair 1 and 1 + 2^-23 is summarised in float64: mean and median
    1 + 2^-24 (float32 arithmetic would round it). No success, or no point at all: NaN, and no
    numpy warning."""
    result = AttackResult(delta=torch.zeros(4, 2), distance=torch.tensor([1.0, math.nan, 3.0, 2.0]),
                          success=torch.tensor([True, False, True, True]), steps=torch.tensor([1, 9, 3, 2]),
                          original_label=torch.zeros(4, dtype=torch.long),
                          adversarial_label=torch.ones(4, dtype=torch.long),
                          gradient_evaluations=17, forward_evaluations=23, seconds=0.5, mode="on")
    assert result.summary() == {"mode": "on", "n_points": 4, "success_rate": 0.75, "median_distance": 2.0,
                                "mean_distance": 2.0, "median_steps": 2.0, "gradient_evaluations": 17, "seconds": 0.5}
    pair = AttackResult(torch.zeros(2, 1), torch.tensor([1.0, 1.0 + 2**-23], dtype=torch.float32),
                        torch.tensor([True, True]), torch.tensor([4, 4]), torch.zeros(2), torch.ones(2), 0, 0, 0.0,
                        "free")
    assert pair.summary()["mean_distance"] == 1.0 + 2**-24 and pair.summary()["median_distance"] == 1.0 + 2**-24
    with _NoWarnings():
        failed = AttackResult(torch.zeros(2, 1), torch.full((2,), math.nan), torch.tensor([False, False]),
                              torch.tensor([5, 5]), torch.zeros(2), torch.zeros(2), 3, 4, 0.1, "off").summary()
        empty = AttackResult(torch.zeros(0, 1), torch.zeros(0), torch.zeros(0, dtype=torch.bool),
                             torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0), 0, 0, 0.0,
                             "free").summary()
    assert failed["success_rate"] == 0.0 and failed["n_points"] == 2
    assert all(math.isnan(failed[key]) for key in ("median_distance", "mean_distance", "median_steps"))
    assert empty["n_points"] == 0
    assert all(math.isnan(empty[key]) for key in ("success_rate", "median_distance", "mean_distance", "median_steps"))


def test_as_batch_casts_numpy_input_and_refuses_other_shapes():
    """Numpy (or list) input becomes a tensor of the model's dtype; a tensor keeps its dtype and is
    detached; anything but a float (N, n) tensor is refused with a message naming its shape and dtype."""
    model = two_class([1.0, 2.0, 3.0], 0.0)
    batch = as_batch(model, np.array([[0.5, 1.0, -2.0]], dtype=np.float32))
    assert batch.dtype == F64 and batch.tolist() == [[0.5, 1.0, -2.0]]
    assert as_batch(model, [[1.0, 2.0, 3.0]]).dtype == F64
    tensor = torch.ones(2, 3, requires_grad=True)
    kept = as_batch(model, tensor)
    assert kept.dtype == torch.float32 and not kept.requires_grad
    with pytest.raises(ValueError, match=_exact("x: expected a float tensor (N, n) of flattened inputs, got (3,) "
                                                "torch.float64")):
        as_batch(model, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match=_exact("x: expected a float tensor (N, n) of flattened inputs, got (2, 3) "
                                                "torch.int64")):
        as_batch(model, torch.ones(2, 3, dtype=torch.long))


def test_greedy_settings_defaults_and_checks():
    """The defaults (free, step 0.01, 1000 steps, 10 bisections, margin loss, two normal rounds) as
    `repr` prints them; every setting at its smallest allowed value is accepted and one below is
    refused with the message naming it."""
    model = two_class([1.0], 0.0)
    assert repr(GreedyProjectedPGD(model)) == ("GreedyProjectedPGD(mode='free', step_size=0.01, max_steps=1000, "
                                               "refine_steps=10, loss='margin', dim=None, seed=0, normal_rounds=2)")
    smallest = GreedyProjectedPGD(model, mode="random_on", step_size=1e-9, max_steps=1, refine_steps=0, loss="ce",
                                  dim=1, seed=5, normal_rounds=0)
    assert repr(smallest) == ("GreedyProjectedPGD(mode='random_on', step_size=1e-09, max_steps=1, refine_steps=0, "
                              "loss='ce', dim=1, seed=5, normal_rounds=0)")
    assert GreedyProjectedPGD(model, dim=3).dim == 3 and GreedyProjectedPGD(model, step_size=0.5).step_size == 0.5
    counts = "max_steps must be >= 1, refine_steps and normal_rounds >= 0; got {}, {}, {}"
    for settings, message in (
            (dict(loss="hinge"), "loss: must be one of ('margin', 'ce'), got 'hinge'"),
            (dict(step_size=0.0), "step_size: must be positive, got 0.0"),
            (dict(max_steps=0), counts.format(0, 10, 2)),
            (dict(refine_steps=-1), counts.format(1000, -1, 2)),
            (dict(normal_rounds=-1), counts.format(1000, 10, -1)),
            (dict(dim=0), "dim: must be a positive integer or None, got 0")):
        with pytest.raises(ValueError, match=_exact(message)):
            GreedyProjectedPGD(model, **settings)


# --------------------------------------------------------------------------- bounded PGD


def test_bounded_budget_defaults():
    """epsilon defaults to 0.1 x the data radius and the step to 2.5 epsilon / steps; given values are kept."""
    assert bounded_budget(None, 4, None, 2.0) == {"epsilon": 0.2, "steps": 4, "step_size": 0.125}
    assert bounded_budget(0.5, 5, None, 100.0) == {"epsilon": 0.5, "steps": 5, "step_size": 0.25}
    assert bounded_budget(0.3, 3, 0.05, 9.0) == {"epsilon": 0.3, "steps": 3, "step_size": 0.05}


def test_bounded_pgd_on_a_linear_model_walks_a_straight_line():
    """Two classes, f = w.x + b with ||w|| = 0.5 (so the CE gradient is shorter than 1, and the step
    must be normalised): every step moves `step_size` along s w / ||w|| (s = +1 for label 0, -1 for
    label 1, away from the label), so after k steps delta = min(k step, eps) s w / ||w|| and f changes
    by s min(k step, eps) ||w||. 3 steps of 0.1 within eps = 0.25: the ball caps it at 0.25; 2 steps
    of 0.1 within eps = 1: 0.2. Targeted at the other class it is the same; targeted at the label,
    the opposite."""
    w, b = torch.tensor([0.3, 0.0, -0.4, 0.0, 0.0], dtype=F64), 0.05
    x = points_at_margin(w, b, [-0.2, 0.3, -0.01], seed=5)
    model = two_class(w, b)
    label = [0, 1, 0]
    s = torch.tensor([1.0, -1.0, 1.0], dtype=F64)[:, None]
    unit = w / 0.5
    for steps, step_size, epsilon, length in ((3, 0.1, 0.25, 0.25), (2, 0.1, 1.0, 0.2)):
        attack = BoundedProjectedPGD(model, epsilon, steps=steps, step_size=step_size)
        delta = attack(x, label=label)
        close(delta, length * s * unit, rtol=0, atol=1e-14)
        close((x + delta) @ w - x @ w, length * 0.5 * s[:, 0], rtol=0, atol=1e-14)
        close(attack(x, target=torch.tensor([1, 0, 1])), delta, rtol=0, atol=1e-14)
        close(attack(x, target=label), -delta, rtol=0, atol=1e-14)
        assert not delta.requires_grad


def test_bounded_pgd_in_per_row_subspaces_reaches_the_closed_form_margin_drop():
    """Mode 'on' with a 2-D subspace B_i per point: delta_i = eps P_i w / ||P_i w|| (label 0), so the
    margin rises by exactly eps ||B_i^T w||, the most any delta in B_i with ||delta|| <= eps can
    move it. A row with B^T w = 0 exactly gets delta = 0 (no NaN). Mode 'off': eps ||w - P_i w||."""
    w, b = torch.tensor([1.0, -2.0, 0.0, 0.0, 1.5], dtype=F64), -3.0
    x = points_at_margin(w, b, [-1.0, -2.0, -0.5], seed=6)
    bases = torch.stack([orthonormal(5, 2, seed) for seed in (10, 11, 12)])
    bases[1] = torch.eye(5, dtype=F64)[:, 2:4]  # e_2, e_3: exactly orthogonal to w
    model = two_class(w, b)
    epsilon = 0.3
    attack = BoundedProjectedPGD(model, epsilon, steps=4, step_size=0.1, mode="on")
    delta = attack(x, label=[0, 0, 0], tangent_bases=bases)
    projected = torch.einsum("ink,ilk,l->in", bases, bases, w)
    expected = epsilon * projected / projected.norm(dim=1, keepdim=True)
    expected[1] = 0
    close(delta, expected, rtol=0, atol=1e-14)
    drop = (x + delta) @ w - x @ w
    close(drop, epsilon * torch.einsum("ink,n->ik", bases, w).norm(dim=1), rtol=1e-13, atol=1e-15)
    off = BoundedProjectedPGD(model, epsilon, steps=4, step_size=0.1, mode="off")(x, label=[0, 0, 0],
                                                                                  tangent_bases=DenseBasis(bases))
    normal = w - projected
    close(off, epsilon * normal / normal.norm(dim=1, keepdim=True), rtol=0, atol=1e-14)


def test_bounded_pgd_multiclass_steps_follow_the_softmax_gradient():
    """Three linear classes: the CE gradient of label y is W^T (softmax(z) - e_y). Two steps of 0.2
    within eps = 0.3: delta_1 = 0.2 g(x) / ||g(x)||, delta_2 = delta_1 + 0.2 g(x + delta_1) / ||.||,
    scaled back to norm 0.3 when longer (a plain recomputation of the documented update)."""
    weight = torch.tensor([[1.0, 0.0, 2.0, -1.0], [0.0, 1.5, -1.0, 0.5], [-1.0, 0.5, 0.0, 1.0]], dtype=F64)
    bias = torch.tensor([0.1, -0.2, 0.0], dtype=F64)
    model = linear(weight, bias)
    x = torch.tensor([[0.2, -0.1, 0.3, 0.0], [1.0, 0.5, -0.5, 0.2]], dtype=F64)
    label = torch.tensor([0, 2])

    def gradient(point):
        p = torch.softmax(point @ weight.T + bias, dim=1)
        return (p - nn.functional.one_hot(label, 3).double()) @ weight

    delta = torch.zeros_like(x)
    for _ in range(2):
        g = gradient(x + delta)
        delta = delta + 0.2 * g / g.norm(dim=1, keepdim=True)
        delta = delta * (0.3 / delta.norm(dim=1, keepdim=True).clamp_min(0.3))
    attack = BoundedProjectedPGD(model, 0.3, steps=2, step_size=0.2)
    close(attack(x, label=label), delta, rtol=0, atol=1e-14)
    assert delta.norm(dim=1).tolist() == pytest.approx([0.3, 0.3], rel=1e-12)


def test_bounded_pgd_coordinate_mode_uses_the_seeded_coordinates():
    """Mode 'coordinate_on', dim 2, seed 4: delta is eps w restricted to `coordinate_subsets(N, n, 2,
    seed=4)`'s coordinates, normalised (and zero elsewhere)."""
    w = torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0], dtype=F64)
    x = points_at_margin(w, 0.0, [-1.0, -2.0], seed=7)
    delta = BoundedProjectedPGD(two_class(w, 0.0), 0.2, steps=3, mode="coordinate_on", dim=2, seed=4)(x, label=[0, 0])
    indices = coordinate_subsets(2, 5, 2, seed=4).indices
    expected = torch.zeros(2, 5, dtype=F64)
    for row in range(2):
        expected[row, indices[row]] = 0.2 * w[indices[row]] / w[indices[row]].norm()
    close(delta, expected, rtol=0, atol=1e-14)


def test_bounded_pgd_settings_and_checks():
    """Defaults: 10 steps of 2.5 eps / 10, free mode, no dim, seed 0; the model's parameter gradients
    stay untouched; exactly one of label= and target=; epsilon > 0 and steps >= 1."""
    model = two_class([1.0, 1.0], 0.0).requires_grad_(True)
    attack = BoundedProjectedPGD(model, 0.4)
    assert repr(attack) == "BoundedProjectedPGD(mode='free', epsilon=0.4, steps=10, step_size=0.1)"
    assert (attack.mode, attack.dim, attack.seed, attack.steps, attack.epsilon) == ("free", None, 0, 10, 0.4)
    assert attack.step_size == pytest.approx(0.1, rel=1e-15)
    assert BoundedProjectedPGD(model, 0.5, steps=1).step_size == 1.25
    assert BoundedProjectedPGD(model, 0.5, steps=2, step_size=0.01).step_size == 0.01
    delta = attack(np.array([[0.1, -0.3]]), label=[0])
    assert model.weight.grad is None and model.bias.grad is None
    close(delta, torch.full((1, 2), 0.4 / math.sqrt(2), dtype=F64), rtol=0, atol=1e-14)
    x = torch.zeros(1, 2, dtype=F64)
    for kwargs in ({}, {"label": [0], "target": [1]}):
        with pytest.raises(ValueError, match=_exact("give exactly one of label= (untargeted) or target= (targeted)")):
            attack(x, **kwargs)
    for epsilon, steps in ((0.0, 3), (-1.0, 3), (0.1, 0)):
        message = f"epsilon must be positive and steps >= 1; got {epsilon}, {steps}"
        with pytest.raises(ValueError, match=_exact(message)):
            BoundedProjectedPGD(model, epsilon, steps=steps)
    assert BoundedProjectedPGD(model, 0.5, steps=1, mode="on", dim=2, seed=3).seed == 3


# --------------------------------------------------------------------------- DeepFool


def test_deepfool_is_exact_in_one_step_on_a_linear_model():
    """f = 3 x_0 + 4 x_1 - 0.5 (||w|| = 5): one linearisation step is (1 + overshoot) |f| / ||w||^2 w
    towards the boundary, so without refinement the distance is (1 + overshoot) |f| / 5 exactly (0.02
    and 0.5 here); with 30 bisections it is |f| / 5. Cost: 2 input gradients (one per class) per
    point and step; forwards: the label, two DeepFool iterations and the r + 1 of the bisection."""
    w, b = torch.tensor([3.0, 4.0, 0.0, 0.0], dtype=F64), -0.5
    margins = torch.tensor([-2.3, 1.15, -0.2], dtype=F64)
    x = points_at_margin(w, b, margins, seed=8)
    model = two_class(w, b)
    d = margins.abs() / 5
    for overshoot in (0.02, 0.5):
        raw = DeepFoolL2(model, overshoot=overshoot, refine_steps=0, projection_rounds=0)(x)
        expected = (1 + overshoot) * (d * -torch.sign(margins))[:, None] * w / 5
        close(raw.delta, expected, rtol=0, atol=1e-14)
        close(raw.distance, (1 + overshoot) * d, rtol=1e-14, atol=0)
        assert raw.steps.tolist() == [1, 1, 1] and raw.success.tolist() == [True, True, True]
        assert raw.gradient_evaluations == 6 and raw.forward_evaluations == 3 + 6 + 3
    refined = DeepFoolL2(model, refine_steps=30, projection_rounds=0)(x)
    close(refined.distance, d, rtol=1e-9, atol=0)
    assert refined.original_label.tolist() == [0, 1, 0] and refined.adversarial_label.tolist() == [1, 0, 1]
    assert refined.forward_evaluations == 3 + 6 + 3 * 31
    assert refined.mode == "free" and refined.basis is None
    # 3 bisections of the 1.5 d overshoot: t* = 2/3 -> 6/8, distance 1.125 d; a projection round
    # restarts from the foot 1.125 d u (already across) and its 3 bisections cannot shorten it
    coarse = DeepFoolL2(model, overshoot=0.5, refine_steps=3, projection_rounds=1)(x)
    close(coarse.distance, 1.125 * d, rtol=1e-14, atol=0)
    # projection rounds on a linear model: one normal gradient, one iteration and one bisection each
    rounds = DeepFoolL2(model, refine_steps=30, projection_rounds=2)(x)
    close(rounds.distance, d, rtol=1e-9, atol=0)
    assert rounds.gradient_evaluations == 6 + 2 * 3
    assert rounds.forward_evaluations == 3 + 6 + 3 * 31 + 2 * (3 + 3 * 31)


def test_deepfool_multiclass_goes_to_the_nearest_linear_boundary():
    """Four linear classes in R^3 with logits W x + b, W rows 0, e_0, e_1, 10 e_2 and b = (3, 2, 1, 0):
    at x = 0 (label 0) the rival boundaries are 1, 2 and 0.3 away, so DeepFool steps 1.02 x 0.3 along
    e_2 to class 3. With `candidates` = 2 or 3 only the most likely classes (0, 1 / 0, 1, 2) are
    linearised: it goes to class 1 at distance 1.0 (1.02 without refinement), with 2 (3) gradients
    per step instead of 4. With candidates = 4 = C (or None) every class is used."""
    weight = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 10]], dtype=F64)
    model = linear(weight, [3.0, 2.0, 1.0, 0.0])
    x = torch.tensor([[0.0, 0.0, 0.0], [0.0, -0.5, 0.01]], dtype=F64)  # second point: d_1 = 1, d_2 = 2.5, d_3 = 0.29
    for candidates in (None, 4, 10):
        result = DeepFoolL2(model, refine_steps=0, projection_rounds=0, candidates=candidates)(x)
        close(result.delta, torch.tensor([[0, 0, 0.306], [0, 0, 1.02 * 0.29]], dtype=F64),
                                   rtol=0, atol=1e-14)
        assert result.adversarial_label.tolist() == [3, 3] and result.gradient_evaluations == 8
    for candidates in (2, 3):
        result = DeepFoolL2(model, refine_steps=0, projection_rounds=0, candidates=candidates)(x)
        close(result.delta, torch.tensor([[1.02, 0, 0], [1.02, 0, 0]], dtype=F64), rtol=0, atol=1e-14)
        assert result.adversarial_label.tolist() == [1, 1] and result.gradient_evaluations == 2 * candidates
        refined = DeepFoolL2(model, refine_steps=30, projection_rounds=2, candidates=candidates)(x)
        close(refined.distance, torch.ones(2, dtype=F64), rtol=1e-9, atol=0)
        assert refined.adversarial_label.tolist() == [1, 1]


def test_deepfool_with_as_many_candidates_as_classes_is_plain_deepfool_even_on_ties():
    """Three linear classes with logits (1, 1/2 + x_0, 3/4 + x_1 / 2): at x = 0 both rival boundaries
    are exactly 0.5 away (1/2 / 1 and 1/4 / 1/2). DeepFool takes the first (lowest-index) nearest
    class, 1: delta = 1.02 x 0.5 e_0. With candidates = 3 = C (or more) nothing changes, the classes
    are not re-ordered by likelihood (which would put class 2 first)."""
    model = linear([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]], [1.0, 0.5, 0.75])
    x = torch.zeros(1, 2, dtype=F64)
    for candidates in (None, 3, 4):
        result = DeepFoolL2(model, refine_steps=0, projection_rounds=0, candidates=candidates)(x)
        assert result.delta.tolist() == [[0.51, 0.0]] and result.adversarial_label.tolist() == [1]
        assert result.gradient_evaluations == 3
    two = DeepFoolL2(model, refine_steps=0, projection_rounds=0, candidates=2)(x)  # classes 0 and 2 only
    assert two.delta.tolist() == [[0.0, 0.51]] and two.adversarial_label.tolist() == [2]


class ScriptedRestarts(DeepFoolL2):
    """DeepFool whose restarts (the projection rounds: a run that does not start at x) return
    scripted perturbations, found where given and not found where None, to check which restart
    results replace the first one."""

    def __init__(self, model, restarts, **settings):
        super().__init__(model, **settings)
        self.restarts, self.classes_seen = restarts, []

    def _run(self, x, label, start, cost, classes=None):
        self.classes_seen.append(classes)
        if not start.any():
            return super()._run(x, label, start, cost, classes)
        delta = torch.stack([start[i] * 0 if r is None else torch.as_tensor(r, dtype=F64)
                             for i, r in enumerate(self.restarts)])
        found = torch.tensor([r is not None for r in self.restarts])
        return delta, found, torch.zeros(len(x), dtype=torch.long)


def test_deepfool_keeps_a_restart_only_when_it_is_found_and_strictly_shorter():
    """f = x_0 + 1.1 x_1 - 1 (two classes), x = 0, no bisection: the first run gives delta_1 =
    1.02 f / ||w||^2 w of length 1.02 / ||w||. Restarts: three times as long (found) -> kept the first;
    not found -> first; delta_1 with its two components swapped (the same length, found) -> first
    (not strictly shorter); 1.01 / 1.02 of delta_1 (shorter, still across) -> the restart, its
    length and its label 1."""
    w = torch.tensor([1.0, 1.1], dtype=F64)
    model = two_class(w, -1.0)
    x = torch.zeros(4, 2, dtype=F64)
    first = 1.02 / (w @ w) * w
    restarts = [3 * first, None, first.flip(0), 1.01 / 1.02 * first]
    result = ScriptedRestarts(model, restarts, refine_steps=0, projection_rounds=1)(x)
    close(result.delta, torch.stack([first, first, first, restarts[3]]), rtol=0, atol=1e-15)
    close(result.distance, torch.tensor([1.02, 1.02, 1.02, 1.01], dtype=F64) / w.norm(), rtol=1e-15, atol=0)
    assert result.adversarial_label.tolist() == [1, 1, 1, 1] and result.success.all()


def test_deepfool_restarts_linearise_the_same_candidate_classes():
    """Four linear classes ordered by likelihood (3, 2, 1, 0 at x = 0) and candidates = 2: the first
    run linearises classes (0, 1) for every point, each restart the same classes for the points that
    succeeded (rows 0 and 2; row 1 sits in a dead region, logits all 0, and gives up)."""
    weight = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 10]], dtype=F64)

    class Gated(nn.Module):
        def forward(self, x):
            return (x @ weight.T + torch.tensor([3.0, 2, 1, 0], dtype=F64)) * (x[:, :1] > -5).double()

    x = torch.tensor([[0.0, 0.0, 0.0], [-6.0, 0.0, 0.0], [0.0, -0.5, 0.01]], dtype=F64)
    attack = ScriptedRestarts(Gated(), [None, None], refine_steps=4, projection_rounds=1, candidates=2)
    result = attack(x)
    assert result.success.tolist() == [True, False, True]
    assert attack.classes_seen[0][[0, 2]].tolist() == [[0, 1], [0, 1]]
    assert attack.classes_seen[1].tolist() == [[0, 1], [0, 1]]


def test_deepfool_gives_up_after_max_iter_and_in_flat_regions():
    """With overshoot -1/2 each step covers half the remaining linear distance d, so after max_iter = 3
    steps delta = (1 - 1/8) d towards the boundary, nothing has flipped: success False, steps 3,
    distance NaN, no bisection and no projection round. A dead ReLU (all rival gradients 0) gives no
    direction: given up at iteration 0 with delta 0."""
    w, b = torch.tensor([0.0, 2.0, 0.0], dtype=F64), 1.0
    x = torch.tensor([[0.0, -1.0, 0.0], [0.3, -2.0, 0.2]], dtype=F64)  # f = -1, -3: d = 0.5, 1.5
    result = DeepFoolL2(two_class(w, b), overshoot=-0.5, max_iter=3, refine_steps=5, projection_rounds=3)(x)
    assert result.success.tolist() == [False, False] and result.steps.tolist() == [3, 3]
    close(result.delta, torch.tensor([[0, 7 / 16, 0], [0, 21 / 16, 0]], dtype=F64), rtol=0, atol=1e-15)
    assert torch.isnan(result.distance).all() and result.adversarial_label.tolist() == [0, 0]
    assert result.gradient_evaluations == 3 * 2 * 2 and result.forward_evaluations == 2 + 4 * 2

    dead = DeepFoolL2(Dead(), max_iter=5, projection_rounds=2)(torch.zeros(3, 2, dtype=F64))
    assert dead.success.tolist() == [False] * 3 and dead.steps.tolist() == [0] * 3
    assert torch.equal(dead.delta, torch.zeros(3, 2, dtype=F64)) and torch.isnan(dead.distance).all()
    assert dead.gradient_evaluations == 6 and dead.forward_evaluations == 6


def test_deepfool_projection_rounds_reach_the_nearest_point_of_a_bent_boundary():
    """Bent boundary x_1 = 1: DeepFool's linearisations land 11 to 29 percent farther than 1 - x_1;
    one projection round restarts from the foot of x on the tangent line (the normal is e_1), which
    is already across, and its bisection gives 1 - x_1 (within 1e-9 with 30 bisections). Also for a
    single point."""
    x = torch.tensor([[0.8, 0.3, 0.0], [-1.2, -0.5, 0.1], [0.5, 0.0, -0.2]], dtype=F64)
    exact = 1 - x[:, 1]
    plain = DeepFoolL2(Bent(), refine_steps=30, projection_rounds=0)(x)
    assert ((plain.distance / exact - 1) > 0.1).all() and plain.steps.tolist() == [3, 3, 2]
    rounds = DeepFoolL2(Bent(), refine_steps=30, projection_rounds=1)(x)
    close(rounds.distance, exact, rtol=1e-9, atol=0)
    close(rounds.delta[:, [0, 2]], torch.zeros(3, 2, dtype=F64), rtol=0, atol=1e-6)
    assert torch.equal(rounds.delta.norm(dim=1), rounds.distance)
    assert rounds.steps.tolist() == [3, 3, 2] and rounds.adversarial_label.tolist() == [1, 1, 1]
    assert rounds.gradient_evaluations == plain.gradient_evaluations + 3
    single = DeepFoolL2(Bent(), refine_steps=30, projection_rounds=1)(x[1:2])
    close(single.distance, exact[1:2], rtol=1e-9, atol=0)


def test_deepfool_boundary_normal_is_the_unit_rival_minus_label_gradient():
    """The boundary normal between y and a rival c of a linear model is (w_c - w_y) / ||w_c - w_y||
    (sign included); where the margin is flat it is 0, not NaN."""
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 4.0], [2.0, 2.0, 1.0]], dtype=F64)
    model = linear(weight, torch.zeros(3))
    point = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 1.0]], dtype=F64)
    normal = DeepFoolL2(model)._boundary_normal(point, torch.tensor([0, 1]), torch.tensor([1, 2]))
    expected = torch.stack([weight[1] - weight[0], weight[2] - weight[1]])
    close(normal, expected / expected.norm(dim=1, keepdim=True), rtol=0, atol=1e-15)
    flat = DeepFoolL2(Dead())._boundary_normal(torch.zeros(2, 3, dtype=F64), torch.tensor([0, 0]), torch.tensor([1, 1]))
    assert torch.equal(flat, torch.zeros(2, 3, dtype=F64))


def test_deepfool_settings_and_timing():
    """The defaults as `repr` prints them (overshoot 0.02, 50 iterations, 20 bisections, 10
    projection rounds, 10 candidate classes); `seconds` is the wall time of the call."""
    model = two_class([1.0, 0.0], -0.3)
    attack = DeepFoolL2(model)
    assert repr(attack) == ("DeepFoolL2(overshoot=0.02, max_iter=50, refine_steps=20, projection_rounds=10, "
                            "candidates=10)")
    assert repr(DeepFoolL2(model, 0.1, 3, 4, 5, None)) == ("DeepFoolL2(overshoot=0.1, max_iter=3, refine_steps=4, "
                                                          "projection_rounds=5, candidates=None)")
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    before = time.perf_counter()
    result = attack(x)
    elapsed = time.perf_counter() - before
    assert 0 <= result.seconds <= elapsed
    close(result.distance, torch.tensor([0.3, 0.7], dtype=F64), rtol=1e-6, atol=0)
    before = time.perf_counter()
    greedy = GreedyProjectedPGD(model, step_size=0.1)(x)
    assert 0 <= greedy.seconds <= time.perf_counter() - before


# --------------------------------------------------------------------------- one device


def test_every_tensor_an_attack_makes_is_on_the_inputs_device():
    """All three attacks on CPU inputs give the same numbers when torch's default device is `meta`
    (where a tensor created without `device=` would land, and hold no values): every tensor they
    create follows the inputs' device. Covers the greedy walk with per-row subspaces, failures and
    normal rounds, a seeded coordinate mode, DeepFool with candidate classes and projection rounds,
    and bounded PGD with a label list and numpy input."""
    w, b = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=F64), 0.25
    margins = torch.tensor([-0.3, 0.45, -30.0], dtype=F64)
    x = points_at_margin(w, b, margins, seed=9)
    bases = torch.stack([orthonormal(4, 2, seed) for seed in (1, 2, 3)])
    model = two_class(w, b)
    multi = linear(torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 10, 0]], dtype=F64), [3.0, 2, 1, 0])

    def run():
        greedy = GreedyProjectedPGD(model, mode="on", step_size=0.05, max_steps=50, refine_steps=8)(x,
                                                                                                  DenseBasis(bases))
        coordinate = GreedyProjectedPGD(model, mode="coordinate_on", dim=2, seed=1, step_size=0.05,
                                        max_steps=50, refine_steps=8)(x.numpy())
        deepfool = DeepFoolL2(multi, refine_steps=8, projection_rounds=2, candidates=2)(x)
        failed = DeepFoolL2(model, overshoot=-0.5, max_iter=2)(x)
        bounded = BoundedProjectedPGD(model, 0.2, steps=3, mode="on")(x.numpy(), label=[0, 1, 0],
                                                                      tangent_bases=DenseBasis(bases))
        return [greedy.delta, greedy.distance, greedy.steps, greedy.success, coordinate.distance,
                deepfool.delta, deepfool.distance, deepfool.steps, failed.delta, failed.steps, bounded]

    expected = run()
    with torch.device("meta"):
        got = run()
    for a, b in zip(expected, got):
        assert b.device.type == "cpu"
        close(b, a, rtol=0, atol=0, equal_nan=True)
    assert expected[3].tolist() == [True, True, False]
