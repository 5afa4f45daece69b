"""The decision boundary inside a render frame, as a triangle mesh.

The class margins d_c = z_c - max_{j != c} z_j (`simulator.geometry.margins.class_margins`)
are evaluated on a regular resolution^3 grid of nodes over the frame's box, and the boundary
is their 0-isosurface, extracted with VTK's flying edges (marching cubes' faster sibling):

* 2 classes: the boundary is {d_0 = 0} (d_1 = -d_0 gives the same surface).
* C > 2 classes: the boundary is the union over c of {d_c = 0}, the boundaries of the class
  regions. Every face between two regions a and b lies on both {d_a = 0} and {d_b = 0}; it is
  kept once, from the smaller class index (the rival class is evaluated at each triangle's
  centre), so the semi-transparent surface is not drawn twice.

Accuracy: within a grid cell the isosurface is placed by linear interpolation of exact values
at the cell's corners, so its points are within about one grid spacing of the true boundary
(the tests check this against a plane and a sphere).

Coarse to fine (default): a dense 96^3 grid is 885k network evaluations per snapshot, which
would dominate an animation. Instead the margins are evaluated on a coarse lattice (stride
8 or less, at least 4 cells per axis), and the lattice is halved until it is the grid,
evaluating the new nodes only inside blocks that may hold the boundary. A block may hold it
when its corner values change sign, or when the value closest to zero is within the spread of
its corner values (min |d| <= max d - min d): that catches the boundary passing within about
one block width, where a function varying at most as fast as it does across the block could
reach zero. At the last halving (blocks of 2 x 2 x 2 cells) the test is
min |d| <= (max d - min d) / 2: a piece of boundary that enters and leaves so small a block
between its corners is at the grid's resolution limit, and the full test costs 25% more
evaluations there. Nodes that are never evaluated get values interpolated from the coarser
lattice; they lie in blocks without the boundary, where only their sign matters, and
interpolation keeps it. Every cell the isosurface passes through then has exact values at its
corners, so the mesh is the dense grid's mesh unless a piece of boundary hides inside a block
while its corner values stay on one side. On all 24 snapshots of each of the 8 shipped scenes
(170M nodes) the signs agree with the dense grid at every node, for 6-28% of the evaluations
(25% on sheet_two_class); the tests compare both on a trained run. coarse_to_fine=False gives
the dense grid.

Evaluation runs in bounded-memory chunks on the model's device (or `device`), in the model's
dtype; the grid is stored as float32. The project's MLP is evaluated as plain tensor
operations (one addmm per layer, activations in place, and for two classes d_0 as one
matrix-vector product with w_0 - w_1 instead of two logits and a subtraction): the same
arithmetic up to rounding, 10% faster than the modules. Its 64 x 64 layer runs at about 100
GFLOP/s on one core here, close to the core's peak, so the grid's network time is set by
the number of nodes evaluated.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from simulator.boundary.frame import RenderFrame
from simulator.geometry.margins import class_margins, model_dtype_device
from simulator.models import MLP

# Numbers per activation tensor: a network call gets ACTIVATION_BUDGET // (widest layer)
# points (at least 1024). 2^18 float32 = 1 MiB stays in cache, which for the small MLPs here is
# 3-5x faster than large chunks, and bounds memory for any grid size.
ACTIVATION_BUDGET = 2**18
# Intra-op threads while evaluating a grid on the CPU. Small-chunk MLP evaluation gains little
# from splitting each matrix product, and a shared machine makes every split wait for a busy
# core (measured on 2 shared cores: 0.03 s per 262k points on one thread, 0.07-6 s on two).
# The animation runs the evaluation beside the renderer, which uses the other core.
EVAL_THREADS = 1
# The coarsest lattice has at least this many cells per axis, and a stride of at most MAX_STRIDE.
MIN_COARSE_CELLS = 4
MAX_STRIDE = 8
# A block is refined when its value nearest zero is within SAFETY x its spread of values.
SAFETY = 1.0
# At the last halving (blocks of 2 x 2 x 2 cells) half of the spread suffices.
SAFETY_LAST = 0.5


@dataclass
class MarginGrid:
    """Margins on the nodes of a resolution^3 grid over `frame`'s box.

    values: (resolution, resolution, resolution, F) float32 indexed [k, j, i] for the node at
    frame coordinates (x_i, y_j, z_k): VTK's point order (x fastest), so the contour reads it
    without a copy. F = 1 (d_0) for two classes, else C (every d_c). evaluated: how many nodes
    were evaluated (the rest were interpolated, see the module docstring).
    """

    frame: RenderFrame
    values: np.ndarray
    n_classes: int
    evaluated: int

    @property
    def resolution(self) -> int:
        return self.values.shape[0]

    @property
    def spacing(self) -> np.ndarray:
        """Node spacing along each frame axis, (3,)."""
        return (self.frame.high - self.frame.low) / (self.resolution - 1)


def grid_axes(frame: RenderFrame, resolution: int) -> list[np.ndarray]:
    """Node coordinates along each frame axis: three arrays of `resolution` values."""
    if resolution < 2:
        raise ValueError(f"resolution: needs at least 2 nodes per axis, got {resolution}")
    return [np.linspace(lo, hi, resolution) for lo, hi in zip(frame.low, frame.high)]


class _Evaluator:
    """Margins at frame coordinates p (M, 3), in chunks, on one device.

    For the project's MLP the frame's affine map x = origin + axes @ p is folded into the
    first layer (W x + b = (W axes) p + (W origin + b)), so the network reads 3 numbers per
    point instead of n: exact up to rounding, and much faster for n = 100.
    """

    def __init__(self, model: torch.nn.Module, frame: RenderFrame, device=None, chunk: int | None = None):
        dtype, model_device = model_dtype_device(model)
        self.device = torch.device(device) if device is not None else model_device
        self.dtype = dtype
        model = model.to(self.device).eval()
        self.network = _folded(model, frame, dtype, self.device)
        widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
        widest = max([frame.ambient_dim] + widths)
        self.chunk = int(chunk) if chunk else max(1024, ACTIVATION_BUDGET // widest)
        self.count = 0

    @torch.inference_mode()
    def logits(self, coords: np.ndarray) -> torch.Tensor:
        """Logits (M, C) at frame coordinates (M, 3), on the evaluation device."""
        outputs = []
        with _cpu_threads(EVAL_THREADS if self.device.type == "cpu" else None):
            for start in range(0, len(coords), self.chunk):
                p = torch.as_tensor(coords[start:start + self.chunk], device=self.device).to(self.dtype)
                outputs.append(self.network(p))
        self.count += len(coords)
        return torch.cat(outputs) if len(outputs) != 1 else outputs[0]

    @torch.inference_mode()
    def margins(self, coords: np.ndarray, n_fields: int) -> np.ndarray:
        """The first n_fields class margins (M, n_fields), float32 on the CPU."""
        out = np.empty((len(coords), n_fields), dtype=np.float32)
        with _cpu_threads(EVAL_THREADS if self.device.type == "cpu" else None):
            for start in range(0, len(coords), self.chunk):
                p = torch.as_tensor(coords[start:start + self.chunk], device=self.device).to(self.dtype)
                if n_fields == 1 and isinstance(self.network, _Layers) and self.network.n_outputs == 2:
                    margins = self.network.margin(p)[:, None]  # d_0 of two classes, one product
                else:
                    logits = self.network(p)
                    if n_fields == 1 and logits.shape[1] == 2:
                        margins = logits[:, :1] - logits[:, 1:]  # d_0 of two classes, without a top-2 search
                    else:
                        margins = class_margins(logits)[:, :n_fields]
                out[start:start + len(p)] = margins.float().cpu().numpy()
        self.count += len(coords)
        return out


@contextmanager
def _cpu_threads(count: int | None):
    """Run the block with `count` torch intra-op threads (None: unchanged), then restore."""
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Affine(torch.nn.Module):
    """model(origin + p @ axes^T): any model, seen through the frame."""

    def __init__(self, model, origin, axes_t):
        super().__init__()
        self.model, self.origin, self.axes_t = model, origin, axes_t

    def forward(self, p):
        return self.model(torch.addmm(self.origin, p, self.axes_t))


class _Layers:
    """A folded MLP as plain tensor operations, for evaluating many points fast.

    Each linear layer is one addmm and ReLU/tanh act in place (no module calls, no extra
    activation copies); `margin` gives d_0 = z_0 - z_1 of a two-class head as one
    matrix-vector product with w_0 - w_1. Same arithmetic as the modules, up to rounding.
    """

    def __init__(self, linears: list[tuple[torch.Tensor, torch.Tensor | None]], activations: list, head):
        self.linears, self.activations = linears, activations
        self.head_weight, self.head_bias = head
        self.n_outputs = self.head_weight.shape[0]
        if self.n_outputs == 2:
            self.margin_weight = (self.head_weight[0] - self.head_weight[1]).contiguous()
            bias = self.head_bias
            if bias is None:
                bias = torch.zeros(2, dtype=self.margin_weight.dtype, device=self.margin_weight.device)
            self.margin_bias = bias[0] - bias[1]

    def features(self, p: torch.Tensor) -> torch.Tensor:
        h = p
        for (weight, bias), activation in zip(self.linears, self.activations):
            h = torch.addmm(bias, h, weight.T) if bias is not None else h @ weight.T
            if isinstance(activation, torch.nn.ReLU):
                h.relu_()
            elif isinstance(activation, torch.nn.Tanh):
                h.tanh_()
            elif activation is not None:
                h = activation(h)
        return h

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        h = self.features(p)
        weight, bias = self.head_weight, self.head_bias
        return torch.addmm(bias, h, weight.T) if bias is not None else h @ weight.T

    def margin(self, p: torch.Tensor) -> torch.Tensor:
        h = self.features(p)
        return torch.addmv(self.margin_bias.expand(len(h)), h, self.margin_weight)


def _folded(model: torch.nn.Module, frame: RenderFrame, dtype, device):
    """A callable mapping frame coordinates (M, 3) to the model's logits (see `_Evaluator`)."""
    if isinstance(model, MLP) and len(model.body) and isinstance(model.body[0], torch.nn.Linear):
        first = model.body[0]
        weight = first.weight.detach().double().cpu().numpy()
        bias = first.bias.detach().double().cpu().numpy() if first.bias is not None else 0.0
        layers = [(torch.as_tensor(weight @ frame.axes, dtype=dtype, device=device),
                   torch.as_tensor(weight @ frame.origin + bias, dtype=dtype, device=device))]
        activations = [None]  # the activation after each linear layer
        for module in list(model.body)[1:]:
            if isinstance(module, torch.nn.Linear):
                layers.append((module.weight.detach(), None if module.bias is None else module.bias.detach()))
                activations.append(None)
            elif activations[-1] is None:
                activations[-1] = module
            else:  # two activations in a row: not the project's layout, use the modules below
                layers = None
                break
        if layers is not None:
            head = (model.head.weight.detach(), None if model.head.bias is None else model.head.bias.detach())
            return _Layers(layers, activations, head)
    origin = torch.as_tensor(frame.origin, dtype=dtype, device=device)
    axes_t = torch.as_tensor(frame.axes.T, dtype=dtype, device=device)
    return _Affine(model, origin, axes_t).eval()


def margin_grid(model: torch.nn.Module, frame: RenderFrame, resolution: int, n_classes: int | None = None,
                device=None, chunk: int | None = None, coarse_to_fine: bool = True) -> MarginGrid:
    """Evaluate the class margins of `model` on the resolution^3 grid over `frame` (see module docstring).

    n_classes: the model's number of outputs (found by one evaluation when None). device: where
    to evaluate (default: where the model is).
    """
    evaluator = _Evaluator(model, frame, device, chunk)
    # Array axes run (z, y, x): see MarginGrid.values.
    axes = [axis.astype(np.float32) for axis in grid_axes(frame, resolution)][::-1]
    if n_classes is None:
        n_classes = evaluator.logits(frame.low[None, :]).shape[1]
        evaluator.count = 0
    n_fields = 1 if n_classes == 2 else n_classes
    stride = _coarsest_stride(resolution) if coarse_to_fine else 1

    lattice = _lattice(resolution, stride)
    values = evaluator.margins(_node_coords(axes, lattice, None), n_fields)
    values = values.reshape(len(lattice), len(lattice), len(lattice), n_fields)
    candidates = _may_hold_zero(values, SAFETY_LAST if stride == 2 else SAFETY) if stride > 1 else None
    while stride > 1:
        stride //= 2
        finer = _lattice(resolution, stride)
        refined = _upsample(values, lattice, finer)
        needed = _nodes_of_blocks(candidates, lattice, finer)
        on_coarse = np.isin(finer, lattice)
        needed &= ~(on_coarse[:, None, None] & on_coarse[None, :, None] & on_coarse[None, None, :])
        flat = np.flatnonzero(needed)  # (much faster than a 3-D np.nonzero)
        rows, columns = np.divmod(flat, len(finer))
        where = (*np.divmod(rows, len(finer)), columns)
        refined.reshape(-1, n_fields)[flat] = evaluator.margins(_node_coords(axes, finer, where), n_fields)
        if stride > 1:
            parents = [np.searchsorted(lattice, finer[:-1], side="right") - 1] * 3
            safety = SAFETY_LAST if stride == 2 else SAFETY
            candidates = candidates[np.ix_(*parents)] & _may_hold_zero(refined, safety)
        values, lattice = refined, finer
    return MarginGrid(frame, values, n_classes, evaluator.count)


def _coarsest_stride(resolution: int) -> int:
    stride = 1
    while stride < MAX_STRIDE and (resolution - 1) / (2 * stride) >= MIN_COARSE_CELLS:
        stride *= 2
    return stride


def _lattice(resolution: int, stride: int) -> np.ndarray:
    """Node indices of the lattice with this stride (the last node always included)."""
    return np.unique(np.r_[np.arange(0, resolution, stride), resolution - 1])


def _node_coords(axes: list[np.ndarray], lattice: np.ndarray, where) -> np.ndarray:
    """Frame coordinates (M, 3) of lattice nodes: all of them (where=None, C order) or those at `where`.

    `axes` are in array order (z, y, x); the coordinates come out as (x, y, z).
    """
    if where is None:
        mesh = np.meshgrid(*(axis[lattice] for axis in axes), indexing="ij")
        return np.stack([m.ravel() for m in mesh[::-1]], axis=-1)
    return np.stack([axis[lattice[index]] for axis, index in zip(axes[::-1], where[::-1])], axis=-1)


def _may_hold_zero(values: np.ndarray, safety: float) -> np.ndarray:
    """Per block of a lattice (cells, cells, cells): may the 0-level pass through it? (see docstring)."""
    corners = [values[i:i + values.shape[0] - 1, j:j + values.shape[1] - 1, k:k + values.shape[2] - 1]
               for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    low = np.minimum.reduce(corners)
    high = np.maximum.reduce(corners)
    spread = high - low
    margin = safety * spread
    return ((low <= margin) & (high >= -margin)).any(axis=-1)


def _nodes_of_blocks(blocks: np.ndarray, lattice: np.ndarray, finer: np.ndarray) -> np.ndarray:
    """Which nodes of the finer lattice lie in (closed) blocks marked True. -> bool (len(finer),)*3.

    A node on a block face belongs to the blocks on both sides; the test is separable, so it
    runs axis by axis (each step an OR of two gathers).
    """
    n_blocks = len(lattice) - 1
    before = np.clip(np.searchsorted(lattice, finer, side="left") - 1, 0, n_blocks - 1)
    after = np.clip(np.searchsorted(lattice, finer, side="right") - 1, 0, n_blocks - 1)
    mask = blocks
    for axis in range(3):
        mask = mask.take(before, axis=axis) | mask.take(after, axis=axis)
    return mask


def _upsample(values: np.ndarray, lattice: np.ndarray, finer: np.ndarray) -> np.ndarray:
    """Trilinear interpolation from one lattice onto a finer one (separable, axis by axis).

    Nodes of the finer lattice that lie on the coarse one are copied; only the others are
    interpolated (half the work of interpolating every node).
    """
    left = np.clip(np.searchsorted(lattice, finer, side="right") - 1, 0, len(lattice) - 2)
    weight = ((finer - lattice[left]) / (lattice[left + 1] - lattice[left])).astype(np.float32)
    exact, between = np.flatnonzero(weight == 0), np.flatnonzero(weight != 0)
    out = values
    for axis in range(3):
        shape = list(out.shape)
        shape[axis] = len(finer)
        result = np.empty(shape, dtype=np.float32)
        source, target = np.moveaxis(out, axis, 0), np.moveaxis(result, axis, 0)
        target[exact] = source[left[exact]]
        low, high = source[left[between]], source[left[between] + 1]
        high -= low
        high *= weight[between].reshape((-1,) + (1,) * (out.ndim - 1))
        high += low
        target[between] = high
        out = result
    return out


# --------------------------------------------------------------------------- the mesh


def contour_boundary(grid: MarginGrid, model: torch.nn.Module | None = None, device=None):
    """The 0-isosurface of the margins: pyvista.PolyData in frame coordinates (empty if none).

    For C > 2 classes, `model` is needed to keep each face once (see the module docstring).
    Point normals come from the margin gradient (smooth shading); field data holds the frame.
    """
    import pyvista as pv  # deferred: a heavy library only drawing needs

    frame, n = grid.frame, grid.resolution
    image = pv.ImageData(dimensions=(n, n, n), spacing=tuple(grid.spacing), origin=tuple(frame.low))
    pieces = []
    for field in range(grid.values.shape[-1]):
        image.point_data["margin"] = grid.values[..., field].ravel()  # [k, j, i]: x fastest, as VTK
        piece = image.contour([0.0], scalars="margin", method="flying_edges", compute_normals=True,
                              compute_scalars=False)
        if grid.values.shape[-1] > 1 and piece.n_cells:
            piece = _faces_owned_by(piece, field, model, frame, device)
        if piece.n_cells:
            pieces.append(piece)
    if not pieces:
        mesh = pv.PolyData()
    else:
        mesh = pieces[0] if len(pieces) == 1 else pieces[0].merge(pieces[1:])
    for name, value in frame.field_data().items():
        mesh.field_data[name] = value
    return mesh


def _faces_owned_by(piece, field: int, model, frame: RenderFrame, device):
    """Of the faces of {d_c = 0}, those whose rival class (the other tied class) is larger than c."""
    if model is None:
        raise ValueError("contour_boundary: a model is needed to merge the boundaries of more than 2 classes")
    centres = np.asarray(piece.cell_centers().points, dtype=np.float32)
    logits = _Evaluator(model, frame, device).logits(centres)
    others = logits.clone()
    others[:, field] = -torch.inf
    rival = others.argmax(dim=1).cpu().numpy()
    keep = np.flatnonzero(rival > field)
    if len(keep) == piece.n_cells:
        return piece
    return piece.extract_cells(keep).extract_surface(algorithm="dataset_surface")


def boundary_mesh(model: torch.nn.Module, frame: RenderFrame, resolution: int, n_classes: int | None = None,
                  device=None, chunk: int | None = None, coarse_to_fine: bool = True):
    """Evaluate the margins on the grid and return the decision boundary mesh (frame coordinates)."""
    grid = margin_grid(model, frame, resolution, n_classes, device, chunk, coarse_to_fine)
    return contour_boundary(grid, model, device)
