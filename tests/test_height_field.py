"""The height-field machinery of `simulator/geometry/height.py` against closed forms and second methods.

Complements tests/test_geometry.py and tests/test_science_closed_forms.py (which measure whole
fields of linear, radial and dimpled classifiers): here the pieces one at a time, on inputs
small enough to compute by hand -

* the chunked line search (`PROBE_CHUNK_BYTES` made tiny) equals the unchunked one and the
  exact crossing t* = -(w.x0 + c) / (w.d) of an affine model, in chunks of the documented size;
* the bisection ends at most `tolerance` above the crossing, no bisection when the bracket is
  already finer than the tolerance, the + side when both sides change at the same step, and
  the default bracket of 32 steps (a band thinner than a step is found only on a sample);
* the MLP fast paths (first layer applied once per line; labels in host coordinates with no
  ambient point formed) against the closed form and the plain path;
* dtypes (a float32 model stays float32) and devices (every tensor follows the inputs: run
  under a `meta` default device, which fails on any tensor created on the default device);
* chart grids and random layouts, the interface neighbours (periodic wrap, step back at the
  chart edge), nearest distances against brute force, the weighted median by hand, the
  summary's keys and edge cases, and `HeightField.as_arrays`.

Every test runs in well under a second.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import simulator.geometry.height as height
from simulator.geometry.height import (
    BRACKET_BLOCK,
    HeightField,
    boundary_heights,
    chart_samples,
    interface_mask,
    manifold_labels,
    measure_height_field,
    nearest_distances,
    probe_directions,
    summarize_heights,
    weighted_median,
)
from simulator.manifolds import Flat, Sphere
from simulator.models import MLP

# --------------------------------------------------------------------------- models with known boundaries


def _affine_linear(n: int, seed: int, dtype=torch.float64) -> tuple[nn.Linear, np.ndarray, float]:
    """A 2-class nn.Linear (no first-layer split) and its margin z_1 - z_0 = w.x + c."""
    torch.manual_seed(seed)
    model = nn.Linear(n, 2).to(dtype)
    with torch.no_grad():
        model.bias.mul_(0.3)
    w = (model.weight[1] - model.weight[0]).detach().double().numpy()
    c = float((model.bias[1] - model.bias[0]).detach())
    return model, w, c


def _affine_mlp(n: int, width: int, seed: int, dtype=torch.float64, bias: bool = True) -> tuple[MLP, np.ndarray, float]:
    """A ReLU MLP (with a first-layer split) whose hidden units are all active wherever the tests
    probe (|x| < 10: first-layer bias 100 >> |W1 x|), so it is the affine map w.x + c exactly:
    w = (W2[1] - W2[0]) W1, c = (W2[1] - W2[0]) . b1 + (b2[1] - b2[0])."""
    torch.manual_seed(seed)
    model = MLP(n, [width], 2, activation="relu", bias=bias).to(dtype).eval()
    first, head = model.body[0], model.head
    with torch.no_grad():
        if bias:
            first.bias.fill_(100.0)
            head.bias.zero_()
            head.bias[1] = -(head.weight[1] - head.weight[0]) @ first.bias + 0.2  # keep c moderate
    difference = (head.weight[1] - head.weight[0]).detach().double()
    w = (difference @ first.weight.detach().double()).numpy()
    c = 0.0
    if bias:
        c = float(difference @ first.bias.detach().double() + (head.bias[1] - head.bias[0]).detach().double())
    return model, w, c


def _lines(g: int, n: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    base = 0.5 * torch.randn(g, n, generator=generator, dtype=torch.float64)
    directions = nn.functional.normalize(torch.randn(g, n, generator=generator, dtype=torch.float64), dim=1)
    return base.to(dtype), directions.to(dtype)


def _exact_heights(w: np.ndarray, c: float, base: torch.Tensor, directions: torch.Tensor, t_max: float) -> np.ndarray:
    """t* = -(w.x0 + c) / (w.d) where |t*| <= t_max, else NaN (a line crosses an affine boundary once)."""
    x0, d = base.double().numpy(), directions.double().numpy()
    t = -(x0 @ w + c) / (d @ w)
    return np.where(np.abs(t) <= t_max, t, np.nan)


class SlabClassifier(nn.Module):
    """Class 1 inside the slab |x_0 - centre| < half_width, class 0 outside."""

    def __init__(self, half_width: float, centre: float = 0.0):
        super().__init__()
        self.half_width, self.centre = half_width, centre

    def forward(self, x):
        return torch.stack([(x[..., 0] - self.centre).abs() - self.half_width, torch.zeros_like(x[..., 0])], dim=-1)


class WithoutFirstLayerSplit(nn.Module):
    """The same model seen as an opaque one: the measurements take their generic path."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def _record_line_chunks(monkeypatch) -> list[int]:
    """Sizes of the line chunks `boundary_heights` hands to `_line_heights`."""
    sizes: list[int] = []
    inner = height._line_heights

    def recording(model, base_points, *args):
        sizes.append(len(base_points))
        return inner(model, base_points, *args)

    monkeypatch.setattr(height, "_line_heights", recording)
    return sizes


# --------------------------------------------------------------------------- the line search


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_chunked_line_search_equals_the_unchunked_search_and_the_closed_form(monkeypatch, kind):
    """A chunk holds as many lines as fit in PROBE_CHUNK_BYTES at 2 min(steps, BRACKET_BLOCK)
    probes per line, each a row of max(n, first hidden width) numbers (n for a model without a
    first-layer split). With room for 3.5 lines: chunks of 3, 3, 3, 1 for 10 lines, and the
    heights are those of one unchunked search and the exact crossings of the affine model."""
    n, width, steps, t_max, tolerance = 5, 12, 16, 2.0, 1e-7
    model, w, c = _affine_linear(n, seed=1) if kind == "linear" else _affine_mlp(n, width, seed=1)
    base, directions = _lines(10, n, seed=2)
    whole = boundary_heights(model, base, directions, t_max, tolerance, steps)
    row = n if kind == "linear" else max(n, width)
    per_line = 2 * min(steps, BRACKET_BLOCK) * row * base.element_size()
    monkeypatch.setattr(height, "PROBE_CHUNK_BYTES", 3 * per_line + per_line // 2)
    sizes = _record_line_chunks(monkeypatch)
    chunked = boundary_heights(model, base, directions, t_max, tolerance, steps)
    assert sizes == [3, 3, 3, 1]
    assert chunked.shape == (10,) and torch.equal(chunked.isnan(), whole.isnan())
    torch.testing.assert_close(chunked, whole, equal_nan=True, rtol=0, atol=0)
    exact = _exact_heights(w, c, base, directions, t_max)
    assert 3 <= np.isfinite(exact).sum() <= 9  # both found and "none within t_max" occur
    np.testing.assert_array_equal(np.isnan(chunked.numpy()), np.isnan(exact))
    found = np.isfinite(exact)
    np.testing.assert_allclose(chunked.numpy()[found], exact[found], atol=2 * tolerance, rtol=0)


def test_a_budget_below_one_line_searches_one_line_at_a_time(monkeypatch):
    """At least one line per chunk, and no more than one when even one line exceeds the budget."""
    model, w, c = _affine_linear(4, seed=3)
    base, directions = _lines(5, 4, seed=4)
    monkeypatch.setattr(height, "PROBE_CHUNK_BYTES", 1)
    sizes = _record_line_chunks(monkeypatch)
    heights = boundary_heights(model, base, directions, 2.0, 1e-7, 8)
    assert sizes == [1] * 5
    exact = _exact_heights(w, c, base, directions, 2.0)
    np.testing.assert_array_equal(np.isnan(heights.numpy()), np.isnan(exact))
    found = np.isfinite(exact)
    np.testing.assert_allclose(heights.numpy()[found], exact[found], atol=2e-7, rtol=0)


def test_bisection_ends_within_tolerance_above_the_crossing():
    """The bisection keeps the label changed at `high`, so the returned |h| lies in
    [|t*|, |t*| + tolerance] (the bracket is one step wide; ceil(log2(step / tol)) halvings),
    here at a tolerance of 1e-9, far below float32 resolution: the arithmetic stays float64."""
    model, w, c = _affine_linear(6, seed=5)
    base, directions = _lines(300, 6, seed=6)
    t_max, tolerance = 2.0, 1e-9
    heights = boundary_heights(model, base, directions, t_max, tolerance, bracket_steps=8).numpy()
    exact = _exact_heights(w, c, base, directions, t_max)
    found = np.isfinite(exact) & (np.abs(exact) < t_max - 1e-6)
    assert found.sum() > 100
    np.testing.assert_array_equal(np.sign(heights[found]), np.sign(exact[found]))
    excess = np.abs(heights[found]) - np.abs(exact[found])
    assert excess.min() >= -1e-12 and excess.max() <= tolerance


class ThresholdClassifier(nn.Module):
    """Class 1 where x_0 > threshold."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        return torch.stack([self.threshold - x[..., 0], torch.zeros_like(x[..., 0])], dim=-1)


def test_the_bracket_ends_are_exact_in_float64():
    """Steps of 0.1, tolerance 1e-9. A crossing 1e-10 below the sample 0.3: no halving reaches
    it, so h is the bracket's upper end itself, 3 x 0.1 in float64 (float32 0.3 is 1.2e-8 off).
    A crossing 1e-10 above the sample 0.2: every halving flips, so h approaches the lower end
    2 x 0.1 from above (float32 0.2 is 3e-9 above it, past the crossing by more than tol)."""
    threshold = 0.3 - 1e-10
    base = torch.zeros(2, 2, dtype=torch.float64)
    base[1, 0] = threshold - (0.2 + 1e-10)
    directions = torch.zeros(2, 2, dtype=torch.float64)
    directions[:, 0] = 1.0
    tolerance = 1e-9
    heights = boundary_heights(ThresholdClassifier(threshold), base, directions, t_max=1.0, tolerance=tolerance,
                               bracket_steps=10).numpy()
    exact = threshold - base[:, 0].numpy()
    assert heights[0] == 3 * 0.1
    assert np.all(heights >= exact) and np.all(heights - exact <= tolerance)


def test_no_bisection_when_the_bracket_is_finer_than_the_tolerance():
    """step = t_max / steps = 0.25 <= tolerance = 0.5: zero halvings, so h is the first changed
    sample itself, sign(t*) ceil(|t*| / step) step."""
    model, w, c = _affine_linear(3, seed=7)
    base, directions = _lines(200, 3, seed=8)
    heights = boundary_heights(model, base, directions, t_max=1.0, tolerance=0.5, bracket_steps=4).numpy()
    exact = _exact_heights(w, c, base, directions, 1.0)
    found = np.isfinite(exact)
    on_sample = np.abs(exact / 0.25 - np.round(exact / 0.25)) < 1e-9  # a crossing on a sample is ambiguous
    keep = found & ~on_sample
    assert keep.sum() > 50
    expected = np.sign(exact[keep]) * np.ceil(np.abs(exact[keep]) / 0.25) * 0.25
    np.testing.assert_array_equal(heights[keep], expected)


def test_both_sides_changing_at_the_same_step_take_the_plus_side():
    """From the centre of a slab of half-width 0.5 the label changes at t = +0.5 and t = -0.5,
    at the same bracket step on both sides: the + side is taken (module docstring), h = +0.5."""
    base = torch.zeros(3, 2, dtype=torch.float64)
    directions = torch.zeros(3, 2, dtype=torch.float64)
    directions[:, 0] = 1.0
    heights = boundary_heights(SlabClassifier(0.5), base, directions, t_max=1.0, tolerance=1e-8, bracket_steps=10)
    torch.testing.assert_close(heights, torch.full((3,), 0.5, dtype=torch.float64), atol=1e-8, rtol=0)


def test_the_default_bracket_has_32_steps():
    """A band |x_0 - 0.5| < 0.005 is thinner than a step: along x_0 from the origin it is found
    only when 0.5 is a sample, i.e. with 32 steps (0.5 = 16/32) but not 33 (16/33, 17/33 miss
    it). The default equals bracket_steps=32: h = 0.495, the band's near edge."""
    base = torch.zeros(2, 3, dtype=torch.float64)
    directions = torch.zeros(2, 3, dtype=torch.float64)
    directions[:, 0] = 1.0
    model = SlabClassifier(0.005, centre=0.5)
    default = boundary_heights(model, base, directions, 1.0, 1e-9)
    assert torch.isnan(boundary_heights(model, base, directions, 1.0, 1e-9, bracket_steps=33)).all()
    torch.testing.assert_close(default, boundary_heights(model, base, directions, 1.0, 1e-9, bracket_steps=32))
    torch.testing.assert_close(default, torch.full((2,), 0.495, dtype=torch.float64), atol=2e-9, rtol=0)


def test_the_first_layer_is_applied_once_per_line():
    """Along x + t d an MLP's first layer is z + t W1 d: it runs once on the G base points, never
    on the probes, and the heights equal the exact crossings and the generic (opaque) search."""
    n, width = 7, 11
    model, w, c = _affine_mlp(n, width, seed=9)
    base, directions = _lines(40, n, seed=10)
    rows_seen: list[int] = []
    handle = model.body[0].register_forward_hook(lambda module, args, out: rows_seen.append(len(args[0])))
    try:
        fast = boundary_heights(model, base, directions, 2.0, 1e-8, 16)
    finally:
        handle.remove()
    assert rows_seen == [40]
    generic = boundary_heights(WithoutFirstLayerSplit(model), base, directions, 2.0, 1e-8, 16)
    exact = _exact_heights(w, c, base, directions, 2.0)
    found = np.isfinite(exact)
    assert 5 < found.sum() < 40
    np.testing.assert_array_equal(np.isnan(fast.numpy()), ~found)
    np.testing.assert_allclose(fast.numpy()[found], exact[found], atol=2e-8, rtol=0)
    torch.testing.assert_close(fast, generic, equal_nan=True, atol=2e-8, rtol=0)


# --------------------------------------------------------------------------- probe directions


def test_probe_directions_are_the_unit_normal_part_of_the_gradient():
    """Codimension > 1 (a 2-sphere in R^6): d = P_N g / |P_N g| with P_N the projector onto the
    normal space (`to_normal`, from the tangent basis: a second method), g = +-w for an affine
    margin: unit, orthogonal to the tangent space."""
    sphere = Sphere(dim=2, radius=1.0, ambient_dim=6, embedding="random", embedding_seed=4)
    model, w, c = _affine_linear(6, seed=11)
    u = sphere.sample_chart(25, np.random.default_rng(0))
    points = torch.as_tensor(sphere.immersion(u))
    d = probe_directions(model, sphere, points, u).numpy()
    # the predicted class's margin has gradient sign(w.x + c) w
    sign = np.sign(sphere.immersion(u) @ w + c)
    normal_part = sign[:, None] * np.stack([sphere.to_normal(w, ui) for ui in u])
    expected = normal_part / np.linalg.norm(normal_part, axis=1, keepdims=True)
    np.testing.assert_allclose(d, expected, atol=1e-12)
    np.testing.assert_allclose(np.einsum("gn,gnk->gk", d, sphere.tangent_basis(u)), 0.0, atol=1e-12)


@pytest.mark.parametrize("ambient_dim", [3, 7])
def test_probe_directions_keep_a_float32_models_dtype(ambient_dim):
    """Codimension 1 (the unit normal) and higher (the gradient's normal part) alike."""
    flat = Flat(dim=2, ambient_dim=ambient_dim, embedding="random", embedding_seed=1)
    model, w, _ = _affine_linear(ambient_dim, seed=12, dtype=torch.float32)
    u = flat.sample_chart(10, np.random.default_rng(1))
    points = torch.as_tensor(flat.immersion(u), dtype=torch.float32)
    d = probe_directions(model, flat, points, u)
    assert d.dtype == torch.float32
    expected = flat.unit_normal(u) if ambient_dim == 3 else flat.to_normal(w, u[0])[None].repeat(10, 0)
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(np.sum(d.double().numpy() * expected, axis=1)), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- labels on the manifold


@pytest.mark.parametrize("bias, offset", [(True, True), (False, False)])
def test_manifold_labels_through_the_first_layer_form_no_ambient_point(bias, offset):
    """h = 3 < n = 9: (W1 E) y + (W1 c + b1), with `immersion` (the (G, n) points) unavailable;
    the labels are those of the model on phi(u) (with biases, those of the affine closed form
    [w.x + c > 0] too)."""
    flat = Flat(dim=2, ambient_dim=9, embedding="random", embedding_seed=6,
                offset=[0.05 * i for i in range(9)] if offset else None)
    model, w, c = _affine_mlp(9, 10, seed=16, bias=bias)
    u = flat.sample_chart(300, np.random.default_rng(2))
    x = flat.immersion(u)
    plain = model(torch.as_tensor(x)).argmax(-1).numpy()
    if bias:  # without biases the ReLUs switch on the flat: not affine, the model itself is the reference
        np.testing.assert_array_equal(plain, (x @ w + c > 0).astype(int))
    assert 0.2 < plain.mean() < 0.8

    def no_ambient_points(_u):
        raise AssertionError("the fast path formed the (G, n) ambient points")

    flat.immersion = no_ambient_points
    np.testing.assert_array_equal(manifold_labels(model, flat, u, torch.float64), plain)


def test_manifold_labels_of_float32_models_by_default():
    """The default dtype is float32: a float32 model without a split (plain path) and a float32
    MLP (host-coordinate path, with an offset) give the closed-form labels."""
    flat = Flat(dim=2, ambient_dim=6, embedding="random", embedding_seed=7, offset=[0.1] * 6)
    u = flat.sample_chart(200, np.random.default_rng(3))
    x = flat.immersion(u)
    for model, w, c in (_affine_linear(6, seed=14, dtype=torch.float32),
                        _affine_mlp(6, 8, seed=15, dtype=torch.float32)):
        margin = x @ w + c
        clear = np.abs(margin) > 1e-3  # float32 round-off cannot flip these
        labels = manifold_labels(model, flat, u)
        assert labels.shape == (200,)
        np.testing.assert_array_equal(labels[clear], (margin[clear] > 0).astype(int))


# --------------------------------------------------------------------------- devices


def _cpu_nearest_distances(monkeypatch):
    """nearest_distances is numpy in, numpy out, on the CPU by design: keep it there."""
    inner = height.nearest_distances

    def on_cpu(*args, **kwargs):
        with torch.device("cpu"):
            return inner(*args, **kwargs)

    monkeypatch.setattr(height, "nearest_distances", on_cpu)


@pytest.mark.parametrize("ambient_dim, kind", [(3, "linear"), (8, "linear"), (8, "mlp"), (8, "mlp-nobias")])
def test_every_tensor_follows_the_models_device(monkeypatch, ambient_dim, kind):
    """Under a `meta` default device a tensor made without an explicit device cannot meet the
    CPU model's (it would sit on the CPU next to a CUDA model): the searches, directions,
    labels and interfaces must give the same numbers as without it."""
    flat = Flat(dim=2, ambient_dim=ambient_dim, embedding="random", embedding_seed=3,
                offset=[0.1] * ambient_dim if kind == "mlp" else None)
    if kind == "linear":
        model, _, _ = _affine_linear(ambient_dim, seed=16)
    else:
        model, _, _ = _affine_mlp(ambient_dim, 10, seed=16, bias=kind == "mlp")
    train = flat.host_immersion(flat.sample_chart(5, np.random.default_rng(0)))
    _cpu_nearest_distances(monkeypatch)
    cpu = torch.device("cpu")

    def everything():
        field = measure_height_field(model, flat, train, resolution=5, max_points=100, t_max=1.5, tolerance=1e-6,
                                     bracket_steps=8, near_radius=0.3, rng=np.random.default_rng(1))
        u = field.u
        points = torch.as_tensor(flat.immersion(u), dtype=torch.float64, device=cpu)
        directions = probe_directions(model, flat, points, u)
        heights = boundary_heights(model, points, directions, 1.5, 1e-6, 8)
        labels = manifold_labels(model, flat, u, torch.float64, cpu)
        mask, _ = interface_mask(model, flat, u, labels, np.full(2, 0.4), np.random.default_rng(2),
                                 torch.float64, cpu)
        return field, directions, heights, labels, mask

    reference = everything()
    with torch.device("meta"):
        on_meta = everything()
    np.testing.assert_array_equal(on_meta[0].h, reference[0].h)
    np.testing.assert_array_equal(on_meta[0].label, reference[0].label)
    np.testing.assert_array_equal(on_meta[0].interface, reference[0].interface)
    for got, expected in zip(on_meta[1:], reference[1:]):
        if isinstance(got, torch.Tensor):
            assert got.device == cpu
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    assert np.isfinite(reference[0].h).any()


def test_the_device_is_passed_on_to_the_label_passes(monkeypatch):
    """measure_height_field evaluates labels and interfaces on the model's device, and
    interface_mask evaluates the neighbours' labels on the device it is given."""
    flat = Flat(dim=2, ambient_dim=3, embedding="identity")
    model, _, _ = _affine_linear(3, seed=17)
    seen: list = []
    inner_labels, inner_mask = height.manifold_labels, height.interface_mask

    def labels(model, manifold, u, dtype=torch.float32, device="cpu"):
        seen.append(("labels", dtype, device))
        return inner_labels(model, manifold, u, dtype, device)

    def mask(model, manifold, u, label, cell, rng, dtype=torch.float32, device="cpu"):
        seen.append(("mask", dtype, device))
        return inner_mask(model, manifold, u, label, cell, rng, dtype, device)

    monkeypatch.setattr(height, "manifold_labels", labels)
    monkeypatch.setattr(height, "interface_mask", mask)
    measure_height_field(model, flat, np.zeros((1, 3)), 3, 100, 1.0, 1e-3, 4, 0.1, np.random.default_rng(0))
    cpu = torch.device("cpu")
    assert seen[:2] == [("labels", torch.float64, cpu), ("mask", torch.float64, cpu)]
    assert all(entry[1:] == (torch.float64, cpu) for entry in seen)
    seen.clear()
    u = flat.sample_chart(6, np.random.default_rng(0))
    device = torch.device("cpu")
    interface_mask(model, flat, u, np.zeros(6, dtype=int), np.full(2, 0.1), np.random.default_rng(0),
                   torch.float64, device)
    assert [entry[0] for entry in seen] == ["labels", "labels"]
    assert all(entry[2] is device and entry[1] is torch.float64 for entry in seen)


# --------------------------------------------------------------------------- chart samples


def test_chart_grid_is_cell_centres_first_axis_slowest():
    """A sphere's chart box [0, pi] x [0, 2 pi) at resolution 4: the axes
    are the cell centres low + (i + 1/2) (high - low) / 4, u[i * 4 + j] = (axis0[i], axis1[j])
    (first coordinate slowest), the cell is (high - low) / 4, weights sum to 1."""
    sphere = Sphere(dim=2, radius=2.0, ambient_dim=3)
    u, weight, grid_shape, cell = chart_samples(sphere, 4, 16, np.random.default_rng(0))
    axis0 = (np.arange(4) + 0.5) * np.pi / 4
    axis1 = (np.arange(4) + 0.5) * 2 * np.pi / 4
    assert grid_shape == (4, 4)
    np.testing.assert_allclose(u.reshape(4, 4, 2)[..., 0], np.repeat(axis0[:, None], 4, axis=1), rtol=1e-15)
    np.testing.assert_allclose(u.reshape(4, 4, 2)[..., 1], np.repeat(axis1[None, :], 4, axis=0), rtol=1e-15)
    np.testing.assert_allclose(cell, [np.pi / 4, np.pi / 2], rtol=1e-15)
    # area element r^2 sin(theta): rows of the grid weighted by sin(axis0)
    np.testing.assert_allclose(weight, np.repeat(np.sin(axis0), 4) / (4 * np.sin(axis0).sum()), rtol=1e-12)


def test_chart_grid_of_a_flat_box_has_equal_weights():
    flat = Flat(dim=3, extent=2.0, ambient_dim=5)
    u, weight, grid_shape, cell = chart_samples(flat, 3, 27, np.random.default_rng(0))
    assert grid_shape == (3, 3, 3) and u.shape == (27, 3)
    np.testing.assert_allclose(cell, [4 / 3] * 3, rtol=1e-15)
    np.testing.assert_allclose(np.unique(u), [-4 / 3, 0.0, 4 / 3], atol=1e-15)
    np.testing.assert_allclose(weight, 1 / 27, rtol=1e-12)


def test_chart_layout_is_random_above_max_points():
    """resolution^k = 9 > max_points = 8 at k = 2 (the grid would not fit): min(res^2, 8) = 8
    area-uniform random points, drawn by the manifold from the given generator, weights 1/8,
    no grid shape; at k = 3, resolution 5, max_points 100: min(25, 100) = 25 points."""
    flat = Flat(dim=2, extent=1.5, ambient_dim=4)
    u, weight, grid_shape, cell = chart_samples(flat, 3, 8, np.random.default_rng(5))
    assert grid_shape is None
    np.testing.assert_array_equal(u, flat.sample_chart(8, np.random.default_rng(5)))
    np.testing.assert_array_equal(weight, np.full(8, 1 / 8))
    np.testing.assert_allclose(cell, [1.0, 1.0], rtol=1e-15)
    assert np.all((u >= -1.5) & (u <= 1.5))
    cube = Flat(dim=3, ambient_dim=4)
    u, weight, grid_shape, _ = chart_samples(cube, 5, 100, np.random.default_rng(6))
    assert grid_shape is None and u.shape == (25, 3)
    np.testing.assert_array_equal(weight, np.full(25, 1 / 25))


def test_chart_layout_is_a_grid_at_exactly_max_points():
    flat = Flat(dim=2, ambient_dim=3)
    u, weight, grid_shape, _ = chart_samples(flat, 3, 9, np.random.default_rng(0))
    assert grid_shape == (3, 3) and len(u) == 9


# --------------------------------------------------------------------------- interfaces


def _record_neighbours(monkeypatch) -> list[np.ndarray]:
    seen: list[np.ndarray] = []
    inner = height.manifold_labels

    def recording(model, manifold, u, dtype=torch.float32, device="cpu"):
        seen.append(np.array(u))
        return inner(model, manifold, u, dtype, device)

    monkeypatch.setattr(height, "manifold_labels", recording)
    return seen


def test_interface_neighbours_step_back_at_a_chart_edge(monkeypatch):
    """Non-periodic axes (a flat, box [-1, 1]^2, step 0.25): the neighbour is u + step along each
    axis, or u - step where u + step leaves the box (a point exactly on the edge, 0.75 + 0.25 =
    1, stays). The mask is where a neighbour's label differs (class 1 where x_0 > 0.1)."""
    flat = Flat(dim=2, ambient_dim=3, embedding="identity")
    model = nn.Linear(3, 2, bias=True).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 0] = 1.0
        model.bias[1] = -0.1
    u = np.array([[0.75, 0.0], [0.9, 0.95], [-0.2, 0.5], [0.0, -1.0]])
    label = manifold_labels(model, flat, u, torch.float64)
    np.testing.assert_array_equal(label, [1, 1, 0, 0])
    seen = _record_neighbours(monkeypatch)
    mask, checked = interface_mask(model, flat, u, label, np.full(2, 0.25), np.random.default_rng(0), torch.float64)
    assert checked == 2 and len(seen) == 2
    np.testing.assert_allclose(seen[0], [[1.0, 0.0], [0.65, 0.95], [0.05, 0.5], [0.25, -1.0]], atol=1e-15)
    np.testing.assert_allclose(seen[1], [[0.75, 0.25], [0.9, 0.7], [-0.2, 0.75], [0.0, -0.75]], atol=1e-15)
    np.testing.assert_array_equal(mask, [False, False, False, True])


def test_interface_neighbours_wrap_around_a_periodic_axis(monkeypatch):
    """A circle whose periodic chart runs over [-1, 2 pi - 1): past the upper end the neighbour
    wraps to low + ((u + step - low) mod 2 pi). Class 1 where x_0 > 0 (cos > 0): the mask is
    the points within one step (0.3) before the angles pi/2 and 3 pi/2 (mod 2 pi)."""
    circle = Sphere(dim=1, radius=1.0, ambient_dim=2, embedding="identity")
    circle.chart_low, circle.chart_high = np.array([-1.0]), np.array([2 * np.pi - 1.0])
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1, 0] = 1.0
    u = np.array([[2 * np.pi - 1.1], [-0.9], [1.4], [4.6], [3.0]])
    label = manifold_labels(model, circle, u, torch.float64)
    seen = _record_neighbours(monkeypatch)
    mask, checked = interface_mask(model, circle, u, label, np.array([0.3]), np.random.default_rng(0), torch.float64)
    assert checked == 1
    np.testing.assert_allclose(seen[0][:, 0], [-0.8, -0.6, 1.7, 4.9, 3.3], atol=1e-12)
    np.testing.assert_array_equal(mask, [False, False, True, True, False])


def test_interface_mask_keeps_a_float32_models_dtype():
    flat = Flat(dim=1, ambient_dim=2, embedding="identity")
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1, 0] = 1.0
    u = np.array([[-0.05], [0.3], [-0.5]])
    mask, _ = interface_mask(model, flat, u, np.array([0, 1, 0]), np.array([0.1]), np.random.default_rng(0))
    np.testing.assert_array_equal(mask, [True, False, False])


# --------------------------------------------------------------------------- the whole field


def _tilted_sheet_model() -> nn.Linear:
    """On the sheet z = 0 in R^3 (identity embedding): margin x_2 + (x_0 - 0.1), so the label on
    the sheet is [u_0 > 0.1] and the boundary along the normal e_2 is at t* = 0.1 - u_0."""
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 2] = 1.0
        model.weight[1, 0] = 1.0
        model.bias[1] = -0.1
    return model


def test_height_field_of_a_tilted_plane_by_hand():
    """Grid 4 x 4 over [-1, 1]^2 (centres +-0.25, +-0.75, cell 0.5), t_max 1, 4 bracket steps and
    tolerance 1 >= step (no bisection): h = sign(t*) ceil(|t*| / 0.25) 0.25 for t* = 0.1 - u_0
    in (0.85, 0.35, -0.15, -0.65) -> (1.0, 0.5, -0.25, -0.75). Labels [u_0 > 0.1]. Near data
    (radius 0): exactly the two training points, which sit on cell centres. Interfaces with
    step 1 along u_0: every point (0.25 -> 1.25 steps back to -0.75, ...); along u_1 none."""
    flat = Flat(dim=2, ambient_dim=3, embedding="identity")
    model = _tilted_sheet_model()
    train = flat.host_immersion(np.array([[-0.25, 0.75], [0.75, -0.75]]))
    field = measure_height_field(model, flat, train, resolution=4, max_points=16, t_max=1.0, tolerance=1.0,
                                 bracket_steps=4, near_radius=0.0, rng=np.random.default_rng(0),
                                 interface_step=np.array([1.0, 1.0]))
    u0 = field.u[:, 0]
    expected = {-0.75: 1.0, -0.25: 0.5, 0.25: -0.25, 0.75: -0.75}
    np.testing.assert_array_equal(field.h, [expected[round(v, 2)] for v in u0])
    np.testing.assert_array_equal(field.label, (u0 > 0.1).astype(int))
    near = np.isclose(field.u, [-0.25, 0.75]).all(1) | np.isclose(field.u, [0.75, -0.75]).all(1)
    assert near.sum() == 2
    np.testing.assert_array_equal(field.near, near)
    np.testing.assert_array_equal(field.interface, np.ones(16, dtype=bool))
    assert field.t_max == 1.0 and field.grid_shape == (4, 4) and field.interface_axes == 2
    np.testing.assert_allclose(field.weight, 1 / 16, rtol=1e-12)
    # with the default step (one cell, 0.5) only u_0 = -0.25 (-> 0.25) crosses the interface
    default = measure_height_field(model, flat, train, 4, 16, 1.0, 1.0, 4, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(default.interface, np.isclose(u0, -0.25))


def test_height_field_of_a_float32_model():
    """A float32 model gets float32 probes and labels (float64 ones would not pass through it);
    the heights are returned as float64 and agree with t* = 0.1 - u_0 to float32 precision."""
    flat = Flat(dim=2, ambient_dim=3, embedding="identity")
    model = _tilted_sheet_model().float()
    field = measure_height_field(model, flat, np.zeros((1, 3)), 6, 36, 1.0, 1e-5, 16, 0.2, np.random.default_rng(0))
    assert field.h.dtype == np.float64
    exact = 0.1 - field.u[:, 0]
    np.testing.assert_allclose(field.h, exact, atol=3e-5)
    np.testing.assert_array_equal(field.label, (field.u[:, 0] > 0.1).astype(int))
    # cell 1/3: only the column u_0 = -1/6 (-> 1/6 > 0.1) crosses the interface
    np.testing.assert_array_equal(field.interface, np.isclose(field.u[:, 0], -1 / 6))


def test_height_field_random_layout_in_high_dimension():
    """k = 9 > INTERFACE_MAX_AXES: a random layout (resolution^9 > max_points) of min(3^2, 50) = 9
    points drawn by the manifold from the given generator, and 8 interface axes per point."""
    flat = Flat(dim=9, ambient_dim=10, embedding="identity")
    model = nn.Linear(10, 2).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 9] = 1.0
        model.bias[1] = -0.5  # boundary at height t* = 0.5 above the sheet everywhere
    field = measure_height_field(model, flat, np.zeros((1, 10)), 3, 50, 1.0, 1e-7, 8, 0.0,
                                 np.random.default_rng(4))
    np.testing.assert_array_equal(field.u, flat.sample_chart(9, np.random.default_rng(4)))
    assert field.grid_shape is None and field.interface_axes == 8
    np.testing.assert_allclose(field.h, 0.5, atol=2e-7)
    assert not field.interface.any()


def test_height_field_as_arrays():
    grid = HeightField(u=np.zeros((4, 2)), h=np.array([0.1, np.nan, -0.2, 0.3]), weight=np.full(4, 0.25),
                       label=np.array([0, 1, 1, 0]), near=np.array([True, False, False, True]),
                       interface=np.array([False, True, False, False]), t_max=1.5, grid_shape=(2, 2),
                       interface_axes=2)
    arrays = grid.as_arrays()
    assert set(arrays) == {"u", "h", "weight", "label", "near", "interface", "t_max", "grid_shape",
                           "interface_axes"}
    for key in ("u", "h", "weight", "label", "near", "interface"):
        assert arrays[key] is getattr(grid, key)
    assert arrays["t_max"] == 1.5 and arrays["t_max"].dtype == np.float64
    assert arrays["grid_shape"].dtype == np.int64 and arrays["grid_shape"].tolist() == [2, 2]
    assert arrays["interface_axes"] == 2 and arrays["interface_axes"].dtype == np.int64
    random = HeightField(**{**grid.__dict__, "grid_shape": None, "interface_axes": 8}).as_arrays()
    assert random["grid_shape"].dtype == np.int64 and random["grid_shape"].shape == (0,)
    assert random["interface_axes"] == 8


# --------------------------------------------------------------------------- distances, medians, summaries


@pytest.mark.parametrize("exclude_self", [False, True])
def test_nearest_distances_against_brute_force(exclude_self):
    """Chunks of 3 over 10 queries; float32 input is measured in float64; exclude_self skips
    each query's own (zero) distance in every chunk."""
    rng = np.random.default_rng(7)
    points = rng.standard_normal((10, 4)).astype(np.float32)
    references = points if exclude_self else rng.standard_normal((6, 4)).astype(np.float32)
    distances = nearest_distances(points, references, exclude_self=exclude_self, chunk=3)
    p, r = points.astype(np.float64), references.astype(np.float64)
    brute = np.linalg.norm(p[:, None, :] - r[None, :, :], axis=-1)
    if exclude_self:
        np.fill_diagonal(brute, np.inf)
    assert distances.dtype == np.float64 and distances.shape == (10,)
    np.testing.assert_allclose(distances, brute.min(axis=1), rtol=1e-13)
    np.testing.assert_array_equal(nearest_distances(points, references, exclude_self=exclude_self), distances)


@pytest.mark.parametrize("values, weights, expected", [
    ([5.0], [1.0], 5.0),  # one value
    ([3.0, 1.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0], 2.0),  # even count, equal weights: the lower middle
    ([1.0, 1.0, 2.0], [1.0, 1.0, 1.0], 1.0),  # a tie holding half the weight
    ([1.0, 2.0, 3.0], [1.0, 1.0, 2.0], 2.0),  # cumulative (1, 2, 4): half = 2 reached at 2
    ([1.0, 2.0, 3.0], [1.0, 0.5, 2.0], 3.0),  # cumulative (1, 1.5, 3.5): half 1.75 passed at 3
    ([np.inf, 1.0, 2.0], [0.6, 0.2, 0.2], np.inf),  # "none" holds most of the weight
])
def test_weighted_median_by_hand(values, weights, expected):
    """The smallest value whose cumulative weight (values sorted) reaches half the total."""
    assert weighted_median(np.array(values), np.array(weights)) == expected


@pytest.mark.parametrize("values, weights", [([], []), ([1.0, 2.0], [0.0, 0.0])])
def test_weighted_median_without_weight_is_nan(values, weights):
    assert math.isnan(weighted_median(np.array(values), np.array(weights)))


def _field(h, near, weight=None, grid_shape=None) -> HeightField:
    h = np.asarray(h, dtype=float)
    weight = np.full(len(h), 1 / len(h)) if weight is None else np.asarray(weight, dtype=float)
    return HeightField(u=np.zeros((len(h), 1)), h=h, weight=weight, label=np.zeros(len(h), dtype=int),
                       near=np.asarray(near, dtype=bool), interface=np.zeros(len(h), dtype=bool), t_max=0.8,
                       grid_shape=grid_shape, interface_axes=1)


def test_summary_keys_and_a_grid_layout():
    summary = summarize_heights(_field([0.1, -0.3, 0.5, 0.7], [True, False, False, True], grid_shape=(2, 2)),
                                0.3, np.array([0.2]))
    assert list(summary) == ["n_points", "layout", "t_max", "clinging_epsilon", "median_abs_h",
                             "median_abs_h_near_data", "median_abs_h_far_from_data", "median_abs_h_at_train_points",
                             "clinging_fraction", "none_fraction", "near_data_fraction", "dimple_depth",
                             "interface_fraction", "interface_axes"]
    assert summary["layout"] == "grid" and summary["t_max"] == 0.8 and summary["clinging_epsilon"] == 0.3
    assert summary["interface_axes"] == 1 and summary["n_points"] == 4
    # |h| = (0.1, 0.3, 0.5, 0.7) at 1/4 each: median 0.3; near (0.1, 0.7) -> 0.1; far (0.3, 0.5) -> 0.3;
    # clinging |h| < 0.3 strictly: only 0.1 (0.3 itself is not below epsilon)
    assert summary["median_abs_h"] == pytest.approx(0.3)
    assert summary["median_abs_h_near_data"] == pytest.approx(0.1)
    assert summary["median_abs_h_far_from_data"] == pytest.approx(0.3)
    assert summary["clinging_fraction"] == pytest.approx(0.25)
    assert summary["dimple_depth"] == pytest.approx(0.2 - 0.3)


def test_summary_of_a_field_with_no_data_nearby_and_mostly_no_boundary():
    """No near-data points: the near median is null, the far one is the field's. Most of the
    area has no boundary within t_max: the median |h| is "none", reported as null, and the
    depth with it. No training heights at all: their median is null, without a numpy warning."""
    field = _field([np.nan, np.nan, 0.2], [False, False, False])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = summarize_heights(field, 0.1, np.array([]))
    assert summary["median_abs_h"] is None and summary["median_abs_h_far_from_data"] is None
    assert summary["median_abs_h_near_data"] is None and summary["median_abs_h_at_train_points"] is None
    assert summary["dimple_depth"] is None
    assert summary["none_fraction"] == pytest.approx(2 / 3) and summary["near_data_fraction"] == 0.0
    field = _field([0.4, np.nan, 0.2], [False, False, False])
    summary = summarize_heights(field, 0.1, np.array([0.5, 0.5]))
    assert summary["median_abs_h_far_from_data"] == pytest.approx(0.4)
    assert summary["median_abs_h_near_data"] is None
    assert summary["dimple_depth"] == pytest.approx(0.5 - 0.4)
    assert summary["layout"] == "random"
