"""Height of the decision boundary above the manifold (DESIGN.md section 4, item 2).

For a chart point u, walk the line x(t) = phi(u) + t nu(u) and find the smallest |t| <= t_max
where the predicted label differs from the label at t = 0. nu is the unit normal when the
manifold has codimension 1 in the input space (n = k + 1), otherwise the unit normal component
of the margin gradient (the normal direction in which the boundary is nearest to first order).

Search: evaluate the label at `bracket_steps` evenly spaced t on each side, take the first
change (the smaller |t| when both sides change at the same step), then bisect that bracket to
`tolerance`. A crossing thinner than t_max / bracket_steps between two samples can be missed.
h = NaN means "no boundary within t_max".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from simulator.geometry.margins import model_dtype_device
from simulator.geometry.tangent import margin_gradients


@torch.no_grad()
def _labels(model, points: torch.Tensor, chunk: int = 262144) -> torch.Tensor:
    return torch.cat([model(block).argmax(dim=-1) for block in points.split(chunk)])


def boundary_heights(model: torch.nn.Module, base_points: torch.Tensor, directions: torch.Tensor,
                     t_max: float, tolerance: float, bracket_steps: int = 32) -> torch.Tensor:
    """Signed distance t to the first label change along base + t * direction. (G,n),(G,n) -> (G,).

    NaN where the label does not change within |t| <= t_max (or the direction is zero). Lines
    are searched in chunks holding at most `PROBE_CHUNK_BYTES` of probe points; each line's
    result depends on that line only.
    """
    g, n = base_points.shape
    # A probe costs its input row, or its first-layer row when `_line_labels` starts there.
    split = model.first_layer_split() if hasattr(model, "first_layer_split") else None
    row = n if split is None else max(n, split[0].out_features)
    probes_per_line = 2 * min(bracket_steps, BRACKET_BLOCK)  # evaluated together (see `_line_heights`)
    chunk = max(1, PROBE_CHUNK_BYTES // (probes_per_line * row * base_points.element_size()))
    if g <= chunk:
        return _line_heights(model, base_points, directions, t_max, tolerance, bracket_steps)
    return torch.cat([_line_heights(model, base_points[start:start + chunk], directions[start:start + chunk],
                                    t_max, tolerance, bracket_steps) for start in range(0, g, chunk)])


# Bytes of probe points (lines x probes per line x row) evaluated at once by `boundary_heights`:
# small enough to stay in cache (4 MiB ran 3x faster than 64 MiB at width 400, measured).
PROBE_CHUNK_BYTES = 4 * 2**20


def _line_heights(model, base_points, directions, t_max, tolerance, bracket_steps) -> torch.Tensor:
    g, n = base_points.shape
    dtype, device = base_points.dtype, base_points.device
    labels_at = _line_labels(model, base_points, directions)
    start = labels_at(torch.zeros(g, 1, dtype=dtype, device=device))[:, 0]
    ts = torch.linspace(0, t_max, bracket_steps + 1, device=device, dtype=dtype)[1:]
    # The bracket walks outwards in blocks of `BRACKET_BLOCK` steps per side, and a line leaves
    # once its label has changed: the first change is the same as with every step evaluated,
    # at a fraction of the probes where the boundary is near (most lines of most scenes).
    never = torch.tensor(bracket_steps, device=device)
    step_index = torch.full((g,), bracket_steps, device=device)  # bracket_steps = not found
    side = torch.ones(g, dtype=dtype, device=device)
    searching = torch.nonzero(directions.norm(dim=1) > 0)[:, 0]  # a zero direction finds nothing
    for block in range(0, bracket_steps, BRACKET_BLOCK):
        if not len(searching):
            break
        block_ts = ts[block:block + BRACKET_BLOCK]
        width = len(block_ts)
        signed = torch.cat([block_ts, -block_ts])  # (2B,): the + side, then the - side
        changed = labels_at(signed.expand(len(searching), -1), searching) != start[searching, None]
        plus, minus = changed[:, :width], changed[:, width:]
        first_plus = torch.where(plus.any(1), plus.float().argmax(1), never)
        first_minus = torch.where(minus.any(1), minus.float().argmax(1), never)
        first = torch.minimum(first_plus, first_minus)
        now = first < bracket_steps
        step_index[searching[now]] = block + first[now]
        side[searching[now]] = torch.where(first_plus[now] <= first_minus[now], 1.0, -1.0).to(dtype)
        searching = searching[~now]
    found = step_index < bracket_steps
    step_index = step_index.clamp(max=bracket_steps - 1)
    step = t_max / bracket_steps
    high = (step_index + 1).to(dtype) * step  # label changed here
    low = step_index.to(dtype) * step  # not yet changed here
    iterations = max(0, math.ceil(math.log2(step / tolerance)))
    for _ in range(iterations):
        middle = (low + high) / 2
        flipped = labels_at((side * middle)[:, None])[:, 0] != start
        high = torch.where(flipped, middle, high)
        low = torch.where(flipped, low, middle)
    return torch.where(found, side * high, torch.nan)


# Bracket steps per side evaluated together before lines that found the boundary stop.
BRACKET_BLOCK = 6


def _line_labels(model, base_points: torch.Tensor, directions: torch.Tensor):
    """labels_at(t (G, T)[, rows]) -> (G, T): the predicted labels at base + t * direction, line by line.

    For an MLP the first layer is applied once per line, W1 (x + t d) + b1 = z + t W1 d, so each
    probe costs a pass through the first hidden width instead of the input dimension n (the
    bracket's 48 probes per line at n = 3072 were dominated by that layer). The probes of a line
    are one batched rank-1 update (baddbmm), 2.6x faster than broadcasting (measured, width 400).
    """
    split = model.first_layer_split() if hasattr(model, "first_layer_split") else None
    if split is None:
        model_of, start, step = model, base_points, directions
    else:
        first, _, model_of = split
        with torch.no_grad():
            start, step = first(base_points), directions @ first.weight.T

    def labels_at(t, rows=None):
        """Labels at t (R, T) along the lines `rows` (default all)."""
        g, count = t.shape
        origin, slope = (start, step) if rows is None else (start[rows], step[rows])
        probes = torch.baddbmm(origin[:, None, :].expand(g, count, -1), t[..., None], slope[:, None, :])
        return _labels(model_of, probes.reshape(g * count, -1)).reshape(t.shape)
    return labels_at


def probe_directions(model: torch.nn.Module, manifold, points: torch.Tensor, u: np.ndarray) -> torch.Tensor:
    """Unit normal (codimension 1) or the unit normal part of the margin gradient. (G, n)."""
    if manifold.ambient_dim == manifold.dim + 1:
        return torch.as_tensor(manifold.unit_normal(u), dtype=points.dtype, device=points.device)
    gradient = margin_gradients(model, points)
    # The tangent space is E (nu^perp) with nu the host-space unit normal (every family is a
    # hypersurface of its host space), so its projection needs no basis: O(n h) per point.
    embedding = torch.as_tensor(manifold.embedding_matrix, dtype=points.dtype, device=points.device)
    normal = torch.as_tensor(manifold.host_unit_normal(u), dtype=points.dtype, device=points.device)
    host = gradient @ embedding
    tangent_part = (host - (host * normal).sum(dim=1, keepdim=True) * normal) @ embedding.T
    normal_part = gradient - tangent_part
    norm = normal_part.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, normal_part / norm.clamp_min(1e-30), torch.zeros_like(normal_part))


@dataclass
class HeightField:
    """Heights over chart points. u (G, k); h (G,) NaN = none within t_max; weight (G,) area
    element (sums to 1); label (G,) predicted class on the manifold; near (G,) near training data;
    interface (G,) label differs from a neighbouring chart point (along `interface_axes` chart axes
    per point); grid_shape for grid layouts."""

    u: np.ndarray
    h: np.ndarray
    weight: np.ndarray
    label: np.ndarray
    near: np.ndarray
    interface: np.ndarray
    t_max: float
    grid_shape: tuple[int, ...] | None
    interface_axes: int

    def as_arrays(self) -> dict:
        return {"u": self.u, "h": self.h, "weight": self.weight, "label": self.label, "near": self.near,
                "interface": self.interface, "t_max": np.float64(self.t_max),
                "grid_shape": np.asarray(self.grid_shape or (), dtype=np.int64),
                "interface_axes": np.int64(self.interface_axes)}


def chart_samples(manifold, resolution: int, max_points: int, rng: np.random.Generator):
    """A regular chart grid with area weights, or (when resolution^k > max_points) resolution^2
    area-uniform random chart points.

    Returns u (G, k), weight (G,) summing to 1, grid_shape or None, and the chart cell size (k,).
    """
    k = manifold.dim
    cell = (np.asarray(manifold.chart_high) - np.asarray(manifold.chart_low)) / resolution
    if resolution**k <= max_points:
        axes = []
        for low, high, periodic in zip(manifold.chart_low, manifold.chart_high, manifold.periodic):
            # cell centres: never exactly on a chart edge or a pole, where charts degenerate
            axes.append(low + (np.arange(resolution) + 0.5) * (high - low) / resolution)
        u = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, k)
        jacobian = manifold.jacobian(u)
        area = np.sqrt(np.abs(np.linalg.det(np.swapaxes(jacobian, -1, -2) @ jacobian)))
        return u, area / area.sum(), (resolution,) * k, cell
    # High k: a grid is impossible; take as many area-uniform random points as a 2-D grid of
    # this resolution would have (capped), so the cost does not explode with k.
    u = manifold.sample_chart(min(resolution**2, max_points), rng)
    return u, np.full(len(u), 1.0 / len(u)), None, cell


def interface_mask(model, manifold, u: np.ndarray, label: np.ndarray, cell: np.ndarray, rng: np.random.Generator,
                   dtype=torch.float32, device="cpu") -> tuple[np.ndarray, int]:
    """True where the on-manifold predicted label differs one chart cell away along some axis.

    Every axis when k <= `INTERFACE_MAX_AXES`; above that, `INTERFACE_MAX_AXES` axes drawn per
    point (a forward pass of every point per checked axis: all 499 axes of a 499-sphere cost
    more than the rest of the field). Returns the mask and the number of axes checked per point.
    """
    k = manifold.dim
    checked = min(k, INTERFACE_MAX_AXES)
    if checked == k:
        axes = np.broadcast_to(np.arange(k), (len(u), k))
    else:  # a fresh axis sample per point, without repeats (a lower bound on "some axis")
        axes = np.argsort(rng.random((len(u), k)), axis=1)[:, :checked]
    mask = np.zeros(len(u), dtype=bool)
    low, high = np.asarray(manifold.chart_low), np.asarray(manifold.chart_high)
    periodic = np.asarray(manifold.periodic, dtype=bool)
    rows = np.arange(len(u))
    for column in range(checked):
        axis = axes[:, column]
        moved = u[rows, axis] + cell[axis]
        wrapped = low[axis] + np.mod(moved - low[axis], high[axis] - low[axis])
        stepped_back = np.where(moved > high[axis], moved - 2 * cell[axis], moved)  # stay in the chart box
        neighbour = u.copy()
        neighbour[rows, axis] = np.where(periodic[axis], wrapped, stepped_back)
        mask |= manifold_labels(model, manifold, neighbour, dtype, device) != label
    return mask, checked


# Chart axes checked per point for class interfaces when k is larger (random chart layouts).
INTERFACE_MAX_AXES = 8


def manifold_labels(model, manifold, u: np.ndarray, dtype=torch.float32, device="cpu") -> np.ndarray:
    """Predicted labels at the manifold points phi(u) (G,).

    For an MLP on a manifold whose host space is narrower than the input (h < n), through the
    first layer in host coordinates: W1 phi(u) + b1 = (W1 E) y(u) + (W1 c + b1), so no (G, n)
    point is formed (at n = 3072, h = 33 the immersion and first layer were 3 s of a run's
    measurement)."""
    split = model.first_layer_split() if hasattr(model, "first_layer_split") else None
    embedding = manifold.embedding_matrix
    if split is None or embedding.shape[1] >= embedding.shape[0]:
        return _labels(model, torch.as_tensor(manifold.immersion(u), dtype=dtype, device=device)).cpu().numpy()
    first, _, logits_of = split
    with torch.no_grad():
        weight = first.weight
        through = weight @ torch.as_tensor(embedding, dtype=weight.dtype, device=weight.device)  # W1 E (h1, h)
        bias = first.bias if first.bias is not None else torch.zeros(len(weight), dtype=weight.dtype,
                                                                      device=weight.device)
        if manifold.ambient_offset is not None:
            bias = bias + weight @ torch.as_tensor(manifold.ambient_offset, dtype=weight.dtype, device=weight.device)
        host = torch.as_tensor(manifold.host_immersion(u), dtype=weight.dtype, device=weight.device)
        return _labels(logits_of, torch.addmm(bias, host, through.T)).cpu().numpy()


def measure_height_field(model, manifold, train_host_points: np.ndarray, resolution: int, max_points: int,
                         t_max: float, tolerance: float, bracket_steps: int, near_radius: float,
                         rng: np.random.Generator, interface_step: np.ndarray | None = None) -> HeightField:
    """The height field over the whole chart (not only near data) for one model.

    train_host_points (N, h): the training points' exact manifold positions in host coordinates
    (`manifold.host_immersion`), for the near-data mask: distances between manifold points are
    the same there as in R^n, at h/n of the cost.

    interface_step (k,): chart offset used to detect class interfaces; default one grid cell.
    Pass the same value for every snapshot so interface shares are comparable across grids.
    """
    dtype, device = model_dtype_device(model)
    u, weight, grid_shape, cell = chart_samples(manifold, resolution, max_points, rng)
    x = manifold.immersion(u)
    points = torch.as_tensor(x, dtype=dtype, device=device)
    directions = probe_directions(model, manifold, points, u)
    h = boundary_heights(model, points, directions, t_max, tolerance, bracket_steps).cpu().double().numpy()
    label = manifold_labels(model, manifold, u, dtype, device)
    distance = nearest_distances(manifold.host_immersion(u), train_host_points)
    step = cell if interface_step is None else np.asarray(interface_step)
    interface, axes_checked = interface_mask(model, manifold, u, label, step, rng, dtype, device)
    return HeightField(u, h, weight, label, distance <= near_radius, interface, t_max, grid_shape, axes_checked)


def nearest_distances(queries: np.ndarray, references: np.ndarray, exclude_self: bool = False,
                      chunk: int = 4096) -> np.ndarray:
    """Euclidean distance from each query (Q, n) to its nearest reference (R, n), in chunks.

    exclude_self: queries are the references themselves; skip the zero self-distance.
    """
    refs = torch.as_tensor(references, dtype=torch.float64)
    out = []
    for start in range(0, len(queries), chunk):
        block = torch.as_tensor(queries[start:start + chunk], dtype=torch.float64)
        distance = torch.cdist(block, refs)
        if exclude_self:
            index = torch.arange(len(block))
            distance[index, index + start] = torch.inf
        out.append(distance.min(dim=1).values)
    return torch.cat(out).numpy()


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of `values` under `weights` (NaN-free input; inf allowed). Empty -> NaN."""
    if len(values) == 0 or weights.sum() <= 0:
        return math.nan
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def summarize_heights(field: HeightField, clinging_epsilon: float, heights_at_train: np.ndarray) -> dict:
    """Median |h| (all, near data, far from data), clinging fraction, dimple depth, interfaces.

    "None within t_max" counts as infinitely far: it is never clinging and pushes medians up
    (a median that is itself "none" is reported as null).
    """
    magnitude = np.where(np.isnan(field.h), np.inf, np.abs(field.h))
    w = field.weight

    def median(mask):
        value = weighted_median(magnitude[mask], w[mask] / max(w[mask].sum(), 1e-300))
        return None if not np.isfinite(value) else value

    at_train = np.where(np.isnan(heights_at_train), np.inf, np.abs(heights_at_train))
    median_train = float(np.median(at_train)) if len(at_train) else math.nan
    median_far = median(~field.near)
    depth = (median_train - median_far) if (median_far is not None and np.isfinite(median_train)) else None
    return {
        "n_points": int(len(field.h)),
        "layout": "grid" if field.grid_shape else "random",
        "t_max": field.t_max,
        "clinging_epsilon": clinging_epsilon,
        "median_abs_h": median(np.ones_like(field.near)),
        "median_abs_h_near_data": median(field.near) if field.near.any() else None,
        "median_abs_h_far_from_data": median_far if (~field.near).any() else None,
        "median_abs_h_at_train_points": median_train if np.isfinite(median_train) else None,
        "clinging_fraction": float(w[magnitude < clinging_epsilon].sum()),
        "none_fraction": float(w[np.isnan(field.h)].sum()),
        "near_data_fraction": float(w[field.near].sum()),
        "dimple_depth": depth,
        "interface_fraction": float(w[field.interface].sum()),
        "interface_axes": field.interface_axes,
    }
