"""The frames pictures are drawn in: the 3-D box of input space that a 3-D picture shows
(`RenderFrame`), and the plane of the 2-D cross-section (`SectionFrame`).

A frame is an affine map from 3-D frame coordinates p to the input space R^n,

    x = origin + axes @ p        origin (n,), axes (n, 3) with orthonormal columns,

and a box [low, high] in frame coordinates. Boundary grids, meshes and camera all live in
frame coordinates; `.vtp` exports are in frame coordinates too, with the frame stored in their
field data so the ambient points can be recovered.

How the frame is chosen (`render_frame`):

* n = 3: the identity (frame coordinates are the input coordinates). The box is the bounding
  box of the training points, each half-side first raised to at least half of the largest one
  (a flat sheet has zero thickness, but its dimples need room above and below it), then
  padded on each side by `render.padding` times that side's length.
* n > 3: an affine 3-D slice through one training point x0 = phi(u0) (`render.slice_point`,
  default the one nearest the chart-box centre, the same point as the 2-D cross-section:
  `default_frame`). It is spanned by the first two tangent directions at x0 and
  the unit normal there (k = 1: the tangent, the normal, and the coordinate direction most
  orthogonal to both). These are the directions of the dimpled-manifold picture: along the
  data and straight off it. Half-size a = `render.slice_half_width` (default 0.6 x the data
  radius) along the tangent axes and a / 2 along the normal axis (as in the cross-section, so
  the 3-D slice is the 2-D cross-section swept along a second tangent direction).

The manifold's own geometry in the frame (`manifold_mesh`):

* k = 1 or 2: the image of a chart grid (a curve or a surface), one piece per connected
  component (the two concentric spheres), closed across periodic chart coordinates, clipped to
  the box; cells whose points leave the slice are dropped. For every shipped family with k <= 2
  the whole manifold lies in the slice (its host space is spanned by the slice's axes), so
  this is exact for any n.
* k >= 3: the trace in the slice, as a height surface over the two tangent axes: each point
  (s, t, 0) of a grid is projected onto the manifold and kept where the projection lies within
  one grid spacing of the slice; it is drawn at the projection's in-slice coordinates. Exact for
  flats (the projection stays in the slice), approximate within that tolerance for curved ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.errors import SimulatorError
from simulator.geometry.scale import data_radius

# Half-width of the cross-section (and of the 3-D slice for n > 3) when the scene sets none, as
# a multiple of the data radius: the data's own extent, with a margin.
DEFAULT_HALF_WIDTH = 0.6
# A flat sheet's box is at least this fraction as thick as it is wide (see the docstring).
MIN_THICKNESS_RATIO = 0.5
# Chart-grid points per axis for the manifold surface (per component); curves get 4x.
SURFACE_RESOLUTION = 96
# The same for a flat: its immersion is affine, so a coarse grid is the same surface (same
# picture, cut at the box faces exactly) with 1% of the triangles, which saves 7 ms a frame in
# software OpenGL.
FLAT_RESOLUTION = 8


@dataclass
class RenderFrame:
    """x = origin + axes @ p for frame coordinates p in the box [low, high]. Shapes: (n,), (n, 3), (3,), (3,)."""

    origin: np.ndarray
    axes: np.ndarray
    low: np.ndarray
    high: np.ndarray
    axis_labels: tuple[str, str, str] = ("x", "y", "z")
    base_index: int | None = None  # n > 3: the training point the slice passes through
    description: str = ""  # one line for titles and the report

    def __post_init__(self):
        self.origin = np.asarray(self.origin, dtype=float)
        self.axes = np.asarray(self.axes, dtype=float)
        self.low = np.asarray(self.low, dtype=float)
        self.high = np.asarray(self.high, dtype=float)
        if self.axes.shape != (self.origin.size, 3):
            raise ValueError(f"axes: expected shape ({self.origin.size}, 3), got {self.axes.shape}")
        if not np.allclose(self.axes.T @ self.axes, np.eye(3), atol=1e-8):
            raise ValueError("axes: the columns must be orthonormal")
        if not np.all(self.high > self.low):
            raise ValueError(f"box: high {self.high} must exceed low {self.low} on every axis")

    @property
    def ambient_dim(self) -> int:
        return self.origin.size

    @property
    def bounds(self) -> tuple[float, float, float, float, float, float]:
        """(xmin, xmax, ymin, ymax, zmin, zmax), VTK's order."""
        return tuple(float(v) for pair in zip(self.low, self.high) for v in pair)

    @property
    def size(self) -> float:
        """Length of the box's diagonal."""
        return float(np.linalg.norm(self.high - self.low))

    def to_ambient(self, p) -> np.ndarray:
        """Frame coordinates (..., 3) -> input-space points (..., n)."""
        return self.origin + np.asarray(p, dtype=float) @ self.axes.T

    def from_ambient(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Input-space points (..., n) -> (frame coordinates (..., 3), distance from the slice (...,)).

        The coordinates are those of the orthogonal projection onto the slice's affine span.
        """
        offset = np.asarray(x, dtype=float) - self.origin
        coords = offset @ self.axes
        residual = np.linalg.norm(offset - coords @ self.axes.T, axis=-1)
        return coords, residual

    def inside(self, coords, tol: float = 0.0) -> np.ndarray:
        """Whether frame coordinates (..., 3) lie in the box (grown by tol). -> bool (...)."""
        coords = np.asarray(coords)
        return np.all((coords >= self.low - tol) & (coords <= self.high + tol), axis=-1)

    def select(self, x, min_points: int = 20) -> tuple[np.ndarray, np.ndarray, float]:
        """Points to draw: (frame coordinates (m, 3), their indices into x, slab half-thickness).

        For n = 3 every point in the box. For n > 3 the points within a slab around the slice,
        shown at their projections; the slab starts at 5% of the smallest box half-side and
        widens until `min_points` points of the box qualify, because with k > 2 almost no data
        point lies close to a given 3-D slice (the legend states the slab).
        """
        coords, residual = self.from_ambient(x)
        in_box = self.inside(coords)
        if self.ambient_dim == 3:
            return coords[in_box], np.flatnonzero(in_box), 0.0
        limit = float(np.min(self.high - self.low) / 2)
        slab = 0.05 * limit
        candidates = np.sort(residual[in_box])
        if len(candidates) >= min_points and candidates[min_points - 1] > slab:
            slab = float(candidates[min_points - 1])
        chosen = in_box & (residual <= slab)
        return coords[chosen], np.flatnonzero(chosen), slab

    def field_data(self) -> dict[str, np.ndarray]:
        """The frame as arrays for a mesh's field data (so exports can be mapped back to R^n)."""
        return {"frame_origin": self.origin, "frame_axes": self.axes.T.copy(), "frame_low": self.low,
                "frame_high": self.high}


# --------------------------------------------------------------------------- the 2-D section


@dataclass
class SectionFrame:
    """The affine plane x0 + s * tangent + r * normal. Shapes: (n,) each."""

    origin: np.ndarray
    tangent: np.ndarray
    normal: np.ndarray
    chart_point: np.ndarray  # chart coordinates of `origin`
    half_width: float

    def points(self, s: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Ambient points for in-plane coordinates s, r (same shape) -> (..., n)."""
        return self.origin + s[..., None] * self.tangent + r[..., None] * self.normal

    def coordinates(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """In-plane coordinates (s, r) of points x (N, n) and their distance from the plane."""
        offset = x - self.origin
        s, r = offset @ self.tangent, offset @ self.normal
        out_of_plane = np.linalg.norm(offset - s[:, None] * self.tangent - r[:, None] * self.normal, axis=1)
        return s, r, out_of_plane


def default_frame(manifold, x_train: np.ndarray, u_train: np.ndarray, half_width: float | None) -> SectionFrame:
    """The 2-D cross-section's plane (and the 3-D slice's centre): through the training point
    nearest the chart-box centre, along the first chart direction and the normal there.
    half_width None: DEFAULT_HALF_WIDTH x the data radius."""
    centre = (np.asarray(manifold.chart_low) + np.asarray(manifold.chart_high)) / 2
    index = int(np.argmin(np.linalg.norm((u_train - centre) / (manifold.chart_high - manifold.chart_low), axis=1)))
    u0 = u_train[index]
    origin = manifold.immersion(u0)
    if half_width is None:
        half_width = DEFAULT_HALF_WIDTH * data_radius(x_train)
    return SectionFrame(origin, manifold.tangent_basis(u0)[:, 0], manifold.unit_normal(u0), u0, float(half_width))


# --------------------------------------------------------------------------- choosing the 3-D frame


def render_frame(source, manifold=None, data=None) -> RenderFrame:
    """The frame of a run (`render_frame(run)`) or of (scene, manifold, data).

    See the module docstring for the choice. Raises SimulatorError for n < 3 or a
    render.slice_point beyond the training set.
    """
    if manifold is None and data is None and hasattr(source, "data"):
        scene, manifold, data = source.scene, source.manifold(), source.data
    else:
        scene = source
        manifold = manifold if manifold is not None else scene.manifold.build()
        if data is None:
            raise ValueError("render_frame(scene, manifold, data): data is required")
    n = data.ambient_dim
    if n < 3:
        raise SimulatorError(
            f"3-D render: the scene {scene.name!r} has ambient_dim {n}, and a 3-D picture needs n >= 3. "
            f"Use the 2-D cross-section (render.first_look) instead, or set render.three_d: false and "
            f"render.animation: false."
        )
    spec = scene.render
    if n == 3:
        return _box_frame(data.x_train, spec.padding)
    return _slice_frame(manifold, data, spec.slice_point, spec.slice_half_width)


def _box_frame(x: np.ndarray, padding: float) -> RenderFrame:
    low, high = x.min(axis=0), x.max(axis=0)
    centre, half = (low + high) / 2, (high - low) / 2
    largest = float(half.max()) or 1.0
    half = np.maximum(half, MIN_THICKNESS_RATIO * largest) * (1 + 2 * padding)
    return RenderFrame(np.zeros(3), np.eye(3), centre - half, centre + half, ("x", "y", "z"), None,
                       "input space (n = 3)")


def _slice_frame(manifold, data, slice_point: int | None, half_width: float | None) -> RenderFrame:
    section = default_frame(manifold, data.x_train, data.u_train, half_width)
    if slice_point is None:
        index = int(np.argmin(np.linalg.norm(data.u_train - section.chart_point, axis=1)))
    else:
        if slice_point >= len(data.u_train):
            raise SimulatorError(
                f"render.slice_point: {slice_point} is not a training point index; the run has "
                f"{len(data.u_train)} training points (0..{len(data.u_train) - 1})"
            )
        index = int(slice_point)
    u0 = data.u_train[index]
    origin = manifold.immersion(u0)
    tangent = manifold.tangent_basis(u0)
    normal = manifold.unit_normal(u0)
    if manifold.dim >= 2:
        axes = np.column_stack([tangent[:, 0], tangent[:, 1], normal])
        labels = ("tangent 1", "tangent 2", "normal")
    else:
        axes = np.column_stack([tangent[:, 0], normal, _third_direction(tangent[:, 0], normal)])
        labels = ("tangent", "normal", "normal 2")
    a = section.half_width
    low, high = np.array([-a, -a, -a / 2]), np.array([a, a, a / 2])
    description = f"3-D slice through training point #{index} ({labels[0]}, {labels[1]}, {labels[2]})"
    return RenderFrame(origin, axes, low, high, labels, index, description)


def _third_direction(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The coordinate direction most orthogonal to span(first, second), orthonormalised."""
    basis = np.column_stack([first, second])
    residuals = np.eye(first.size) - basis @ basis.T  # column i: e_i minus its projection
    column = residuals[:, int(np.argmax(np.linalg.norm(residuals, axis=0)))]
    return column / np.linalg.norm(column)


# --------------------------------------------------------------------------- the manifold


def manifold_mesh(frame: RenderFrame, manifold, resolution: int | None = None):
    """The manifold (or its trace) in frame coordinates, clipped to the box: pyvista.PolyData.

    k <= 2: a surface (quads) or polyline from a chart grid; k >= 3: the height-surface trace.
    resolution: grid points per axis (default SURFACE_RESOLUTION, FLAT_RESOLUTION for a flat).
    Point data "component" holds the connected component. Field data holds the frame.
    """
    import pyvista as pv  # deferred: a heavy library only drawing needs

    if resolution is None:
        resolution = FLAT_RESOLUTION if getattr(manifold, "family", None) == "flat" else SURFACE_RESOLUTION

    if manifold.dim <= 2:
        mesh = _chart_mesh(frame, manifold, resolution)
    else:
        mesh = _trace_mesh(frame, manifold, resolution)
    if mesh.n_points:
        mesh = _clip_to_box(mesh, frame)
    if not isinstance(mesh, pv.PolyData):
        mesh = mesh.extract_surface(algorithm="dataset_surface")
    for name, value in frame.field_data().items():
        mesh.field_data[name] = value
    return mesh


def _component_ranges(manifold, resolution: int) -> list[np.ndarray]:
    """Per connected component, the chart coordinates of its first axis (resolution values).

    A chart with several components (concentric spheres) splits its first coordinate evenly
    among them; the upper end of every piece but the last is pulled in by a hair, since that
    end belongs to the next component.
    """
    low, high = float(manifold.chart_low[0]), float(manifold.chart_high[0])
    count = manifold.n_components
    width = (high - low) / count
    pieces = []
    for c in range(count):
        start, stop = low + c * width, low + (c + 1) * width
        if c < count - 1:
            stop -= 1e-9 * width
        pieces.append(np.linspace(start, stop, resolution))
    return pieces


def _chart_mesh(frame: RenderFrame, manifold, resolution: int):
    import pyvista as pv  # deferred: a heavy library only drawing needs

    tol = 1e-6 * frame.size
    pieces = []
    for first_axis in _component_ranges(manifold, resolution if manifold.dim == 2 else 4 * resolution):
        if manifold.dim == 2:
            # endpoint=True on periodic axes too: the duplicated seam is merged by clean() below.
            second_axis = np.linspace(manifold.chart_low[1], manifold.chart_high[1], resolution)
            u = np.stack(np.meshgrid(first_axis, second_axis, indexing="ij"), axis=-1)
            coords, residual = frame.from_ambient(manifold.immersion(u))
            grid = pv.StructuredGrid(coords[..., 0], coords[..., 1], coords[..., 2])
            grid.point_data["component"] = manifold.component(u).ravel(order="F")
            grid.point_data["in_slice"] = (residual <= tol).ravel(order="F").astype(np.uint8)
            piece = grid.extract_surface(algorithm="dataset_surface")
        else:
            u = first_axis[:, None]
            coords, residual = frame.from_ambient(manifold.immersion(u))
            piece = pv.lines_from_points(coords)
            piece.point_data["component"] = manifold.component(u)
            piece.point_data["in_slice"] = (residual <= tol).astype(np.uint8)
        pieces.append(piece)
    mesh = pieces[0] if len(pieces) == 1 else pieces[0].merge(pieces[1:])
    mesh = _keep_uniform_cells(mesh)
    mesh = mesh.clean(tolerance=1e-9 * frame.size, absolute=False) if mesh.n_points else mesh
    if mesh.n_points and manifold.dim == 2:
        mesh = mesh.compute_normals(split_vertices=False, auto_orient_normals=False, consistent_normals=True)
    return mesh


def _keep_uniform_cells(mesh):
    """Drop cells that join two components or leave the slice."""
    import pyvista as pv  # deferred: a heavy library only drawing needs

    if mesh.n_cells == 0:
        return mesh
    component = np.asarray(mesh.point_data["component"])
    in_slice = np.asarray(mesh.point_data["in_slice"]).astype(bool)
    ids = _cell_point_ids(mesh)  # (cells, points per cell)
    keep = in_slice[ids].all(axis=1) & (component[ids] == component[ids[:, :1]]).all(axis=1)
    if keep.all():
        return mesh
    kept = mesh.extract_cells(np.flatnonzero(keep))
    return kept.extract_surface(algorithm="dataset_surface") if not isinstance(kept, pv.PolyData) else kept


def _cell_point_ids(mesh) -> np.ndarray:
    """Point ids (cells, m) of a PolyData whose cells all have m points (quads, or line segments)."""
    flat = np.asarray(mesh.faces if mesh.n_faces else mesh.lines)
    if not len(flat):
        return np.empty((0, 1), dtype=int)
    width = int(flat[0]) + 1
    if len(flat) % width or np.any(flat[::width] != width - 1):
        raise ValueError("expected cells of one size (a chart grid's quads or a polyline's segments)")
    return flat.reshape(-1, width)[:, 1:]


def _trace_mesh(frame: RenderFrame, manifold, resolution: int):
    """k >= 3: project a grid over the two tangent axes onto the manifold; keep what stays in the slice."""
    import pyvista as pv  # deferred: a heavy library only drawing needs

    s = np.linspace(frame.low[0], frame.high[0], resolution)
    t = np.linspace(frame.low[1], frame.high[1], resolution)
    spacing = max(s[1] - s[0], t[1] - t[0])
    plane = np.stack(np.meshgrid(s, t, [0.0], indexing="ij"), axis=-1)[:, :, 0, :]
    projected = manifold.projection(frame.to_ambient(plane))
    coords, residual = frame.from_ambient(projected)
    u = manifold.chart(projected)
    grid = pv.StructuredGrid(coords[..., 0], coords[..., 1], coords[..., 2])
    grid.point_data["component"] = manifold.component(u).ravel(order="F")
    grid.point_data["in_slice"] = (residual <= spacing).ravel(order="F").astype(np.uint8)
    mesh = _keep_uniform_cells(grid.extract_surface(algorithm="dataset_surface"))
    if mesh.n_points:
        mesh = mesh.compute_normals(split_vertices=False, consistent_normals=True)
    return mesh


def _clip_to_box(mesh, frame: RenderFrame):
    """The part of a mesh inside the frame's box (cut cleanly at the faces)."""
    low, high = mesh.bounds[0::2], mesh.bounds[1::2]
    if np.all(np.asarray(low) >= frame.low) and np.all(np.asarray(high) <= frame.high):
        return mesh
    clipped = mesh.clip_box(frame.bounds, invert=False)
    return clipped.extract_surface(algorithm="dataset_surface")
