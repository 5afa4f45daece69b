"""Off-screen 3-D pictures of a run: manifold, data, decision boundary (pyvista).

    from simulator.render.scene3d import render_run, export_meshes
    png = render_run(load_run("renders/sheet_two_class"))          # final snapshot
    meshes = export_meshes(run)                                    # boundary_step<step>.vtp, manifold.vtp

Everything is drawn in the run's render frame (`simulator.render.frame`): for n = 3 the input
space itself, for n > 3 a 3-D slice through a training point (tangent, tangent, normal). The
picture holds the manifold surface (or its trace in the slice), the training points in the
frame coloured by class (for n > 3 those within a slab of the slice, shown at their
projections), the decision boundary as a semi-transparent surface, optionally the free
adversarial perturbations of a few test points as arrows (for n > 3 their in-slice
component), a legend, and a title with the scene name and the step.

The camera looks at the box centre from `render.camera` (azimuth around the frame's third axis,
elevation above its first two; the third axis is the manifold normal for n > 3, so a low
elevation looks along the sheet and shows the dents), then fits the box and applies the zoom.
`BoundaryScene` keeps one plotter and swaps the boundary mesh in place, so an animation
renders every snapshot with the same camera and without rebuilding anything else.

pyvista is imported inside functions: the core library never needs it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from simulator.render.boundary import boundary_mesh
from simulator.render.frame import RenderFrame, manifold_mesh, render_frame
from simulator.runs import atomic_path

# matplotlib's tab10, as in the 2-D cross-sections, so class colours agree across figures.
CLASS_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"]
BOUNDARY_COLOUR = "#f2c14e"
BOUNDARY_OPACITY = 0.55
MANIFOLD_COLOUR = "#8fa9c4"
MANIFOLD_OPACITY = 0.45
ARROW_COLOUR = "#c0142c"
LEGEND_SHADES = {BOUNDARY_COLOUR: "#b8860b", MANIFOLD_COLOUR: "#4f6f8f"}


def class_colour(c: int) -> str:
    return CLASS_COLOURS[c % len(CLASS_COLOURS)]


def run_device(run):
    """The device the run's scene asks for (train.device), where grids are evaluated."""
    from simulator.train import resolve_device

    return resolve_device(run.scene.train.device)


def boundary_for(run, snapshot_index: int = -1, frame: RenderFrame | None = None, device=None):
    """The decision-boundary mesh of one snapshot in the run's frame (frame coordinates).

    Grid: render.grid_resolution nodes per axis, evaluated coarse to fine on the run's device.
    """
    frame = frame or render_frame(run)
    index = _index(run, snapshot_index)
    model = run.model_at(index)
    return boundary_mesh(model, frame, run.scene.render.grid_resolution, run.data.n_classes,
                         device=device or run_device(run))


def _index(run, snapshot_index: int) -> int:
    count = len(run.snapshots)
    if not -count <= snapshot_index < count:
        raise IndexError(f"snapshot_index: {snapshot_index} is out of range for a run with {count} snapshots")
    return snapshot_index % count


class BoundaryScene:
    """One off-screen plotter showing a run's frame; `show_snapshot` swaps the boundary in place.

    Shapes: screenshots are (height, width, 3) uint8 with (width, height) = render.window_size.
    """

    def __init__(self, run, frame: RenderFrame | None = None, window_size: tuple[int, int] | None = None):
        from simulator.render.headless import ensure_offscreen

        ensure_offscreen()
        import pyvista as pv

        self.run = run
        self.frame = frame or render_frame(run)
        spec = run.scene.render
        self.window_size = tuple(window_size or spec.window_size)
        theme = pv.themes.DocumentTheme()
        theme.allow_empty_mesh = True  # a snapshot may have no boundary inside the box
        # No multi-sampling: in software OpenGL (llvmpipe) it doubles the time per frame,
        # for edges that are hardly smoother at these sizes.
        theme.anti_aliasing = None
        theme.multi_samples = 1
        self.plotter = pv.Plotter(off_screen=True, window_size=list(self.window_size), theme=theme)
        self.plotter.set_background("white")
        self.legend: list[tuple[str, str]] = []
        self._add_static()
        self.boundary = pv.PolyData()
        actor = self.plotter.add_mesh(self.boundary, color=BOUNDARY_COLOUR, opacity=BOUNDARY_OPACITY,
                                      specular=0.3, reset_camera=False, name="boundary")
        actor.prop.interpolation = "gouraud"  # with the Normals from the margin gradient: smooth
        self.legend.insert(0, ("decision boundary", BOUNDARY_COLOUR))
        self._add_legend()
        self.set_camera(spec.camera.azimuth, spec.camera.elevation, spec.camera.zoom)
        # No depth peeling: with Mesa's llvmpipe (EGL and OSMesa) it drops translucent
        # surfaces altogether. Two translucent layers blend in drawing order instead.

    # ------------------------------------------------------------------ static parts

    def _add_static(self) -> None:
        import pyvista as pv

        frame, run, plotter = self.frame, self.run, self.plotter
        plotter.add_mesh(pv.Box(frame.bounds).outline(), color="#9a9a9a", line_width=1, reset_camera=False)
        manifold = run.manifold()
        self.manifold = manifold_mesh(frame, manifold)
        label = "data manifold" if frame.ambient_dim == 3 else "manifold trace in the slice"
        if self.manifold.n_points:
            if manifold.dim == 1:
                plotter.add_mesh(self.manifold.tube(radius=0.004 * frame.size), color=MANIFOLD_COLOUR,
                                 reset_camera=False)
            else:
                actor = plotter.add_mesh(self.manifold, color=MANIFOLD_COLOUR, opacity=MANIFOLD_OPACITY,
                                         reset_camera=False)
                actor.prop.interpolation = "gouraud"
            self.legend.append((label, MANIFOLD_COLOUR))
        coords, index, slab = frame.select(run.data.x_train)
        labels = run.data.y_train[index]
        point_size = max(4.0, 7.0 * min(self.window_size) / 600)
        for c in range(run.data.n_classes):
            mine = coords[labels == c]
            if len(mine):
                plotter.add_points(mine, color=class_colour(c), point_size=point_size,
                                   render_points_as_spheres=True, reset_camera=False)
            self.legend.append((f"class {c}", class_colour(c)))
        self.slab = slab
        labels = tuple(_short_label(name) for name in frame.axis_labels)
        plotter.add_axes(xlabel=labels[0], ylabel=labels[1], zlabel=labels[2], line_width=2,
                         viewport=(0.0, 0.08, 0.16, 0.30))

    def _add_legend(self) -> None:
        # Legend text takes its entry's colour, so entries use darker shades of the surfaces.
        widest = max(len(label) for label, _ in self.legend)
        width, height = min(0.6, 0.0125 * widest + 0.05), 0.045 * len(self.legend)
        legend = self.plotter.add_legend(labels=[[label, LEGEND_SHADES.get(colour, colour)]
                                                 for label, colour in self.legend],
                                         bcolor="white", size=(width, height), face="rectangle",
                                         background_opacity=0.85)
        legend.SetPosition(0.99 - width, 0.99 - height)  # pyvista's 'upper right' ignores the size

    def add_adversarial_paths(self, model, count: int, device=None) -> int:
        """Arrows from test points to their free minimal adversarial examples (GreedyProjectedPGD).

        Test points are the first `count` in the frame (for n > 3: nearest the slice); returns
        how many arrows were drawn (points with no adversarial found are skipped).
        """
        import torch

        from simulator.attacks import GreedyProjectedPGD
        from simulator.geometry.margins import model_dtype_device

        if count <= 0:
            return 0
        data = self.run.data
        _, index, _ = self.frame.select(data.x_test, min_points=count)
        index = index[:count]
        if not len(index):
            return 0
        device = device or run_device(self.run)
        model = model.to(device).eval()
        dtype, _ = model_dtype_device(model)
        x = torch.as_tensor(data.x_test[index], dtype=dtype, device=device)
        radius = float(np.max(np.linalg.norm(data.x_train - data.x_train.mean(axis=0), axis=1)))
        result = GreedyProjectedPGD(model, mode="free", step_size=0.01 * radius, max_steps=1000)(x)
        found = result.success.cpu().numpy().astype(bool)
        if not found.any():
            return 0
        start = data.x_test[index][found]
        end = start + result.delta.detach().double().cpu().numpy()[found]
        start3, _ = self.frame.from_ambient(start)
        end3, _ = self.frame.from_ambient(end)
        self.plotter.add_arrows(start3, end3 - start3, mag=1.0, color=ARROW_COLOUR, reset_camera=False)
        label = "free adversarial perturbation" + ("" if self.frame.ambient_dim == 3 else " (in-slice part)")
        self.legend.append((label, ARROW_COLOUR))
        self._add_legend()
        return int(found.sum())

    # ------------------------------------------------------------------ per snapshot

    def set_camera(self, azimuth: float, elevation: float, zoom: float = 1.0) -> None:
        """Look at the box centre from (azimuth, elevation) degrees, fit the box, then zoom."""
        frame = self.frame
        centre = (frame.low + frame.high) / 2
        az, el = math.radians(azimuth), math.radians(elevation)
        direction = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        camera = self.plotter.camera
        camera.focal_point = tuple(centre)
        camera.position = tuple(centre + direction * frame.size)
        camera.up = (0.0, 0.0, 1.0)
        self.plotter.reset_camera(render=False, bounds=frame.bounds)
        camera.zoom(zoom)

    def show_boundary(self, mesh, title: str, corner: str) -> None:
        """Swap in a boundary mesh (frame coordinates) and set the title and corner text."""
        self.boundary.copy_from(mesh, deep=False)
        self.boundary.Modified()
        add_text = self.plotter.add_text
        add_text(title, position="upper_left", font_size=11, color="black", name="title", render=False)
        add_text(corner, position="lower_right", font_size=10, color="black", name="corner", render=False)

    def show_snapshot(self, index: int, mesh=None, device=None):
        """Show snapshot `index` (its boundary computed unless given); returns the boundary mesh."""
        run = self.run
        index = _index(run, index)
        record = run.snapshots[index]
        if mesh is None:
            mesh = boundary_for(run, index, self.frame, device)
        self.show_boundary(mesh, snapshot_title(run, record.step, self.frame, self.slab),
                           f"step {record.step}\ntest accuracy {record.test_accuracy:.1%}")
        return mesh

    def screenshot(self) -> np.ndarray:
        from simulator.render.headless import RenderingUnavailable

        self.plotter.render()  # screenshot() alone may return the previous frame's buffer
        image = self.plotter.screenshot(return_img=True)
        if image is None or image.size == 0:
            raise RenderingUnavailable("the off-screen render returned no image; " + _hint())
        return np.asarray(image)[..., :3]

    def close(self) -> None:
        self.plotter.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _hint() -> str:
    from simulator.render.headless import INSTALL_HINT

    return INSTALL_HINT


def _short_label(name: str) -> str:
    return {"tangent 1": "t1", "tangent 2": "t2", "tangent": "t", "normal": "n", "normal 2": "n2"}.get(name, name)


def snapshot_title(run, step: int, frame: RenderFrame, slab: float = 0.0) -> str:
    title = f"{run.scene.name}: decision boundary at step {step}"
    if frame.ambient_dim > 3:
        title += f"\n{frame.description};\ntraining points within {slab:.2g} of the slice, projected onto it"
    return title


# --------------------------------------------------------------------------- files


def write_png(image: np.ndarray, path: Path) -> Path:
    """Write an (h, w, 3) uint8 image as PNG, atomically."""
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as temporary:
        iio.imwrite(temporary, image, extension=".png")
    return path


def write_vtp(mesh, path: Path) -> Path:
    """Write a PolyData as VTK XML (.vtp, ParaView opens it), atomically.

    VTK's writer is called directly because pyvista's save() picks the format from the file
    extension, and the temporary file of an atomic write ends in .tmp.
    """
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    path = Path(path)
    with atomic_path(path) as temporary:
        writer = vtkXMLPolyDataWriter()
        writer.SetFileName(str(temporary))
        writer.SetInputData(mesh)
        writer.SetDataModeToBinary()
        writer.SetCompressorTypeToZLib()
        if writer.Write() != 1:
            raise OSError(f"VTK could not write {path}")
    return path


def render_run(run, snapshot_index: int = -1, path: str | Path | None = None, boundary=None) -> Path:
    """Render one snapshot (default the final one) to a PNG; returns its path.

    path: default `<run>/boundary3d_step<step>.png`. boundary: a precomputed boundary mesh of
    that snapshot (from `boundary_for`), to skip the grid evaluation. Adds
    render.adversarial_paths arrows when that is > 0.
    """
    index = _index(run, snapshot_index)
    step = run.snapshots[index].step
    path = Path(path) if path is not None else Path(run.path) / f"boundary3d_step{step}.png"
    with BoundaryScene(run) as scene:
        scene.show_snapshot(index, boundary)
        if run.scene.render.adversarial_paths:
            scene.add_adversarial_paths(run.model_at(index), run.scene.render.adversarial_paths)
        image = scene.screenshot()
    return write_png(image, path)


def export_meshes(run, snapshot_index: int = -1, boundary=None) -> list[Path]:
    """Write `boundary_step<step>.vtp` (that snapshot, default the final one) and `manifold.vtp`.

    Both are in frame coordinates; their field data hold the frame (frame_origin (n,),
    frame_axes (3, n), frame_low, frame_high), so x = frame_origin + p @ frame_axes.
    """
    frame = render_frame(run)
    index = _index(run, snapshot_index)
    if boundary is None:
        boundary = boundary_for(run, index, frame)
    folder = Path(run.path)
    boundary_path = write_vtp(boundary, folder / f"boundary_step{run.snapshots[index].step}.vtp")
    manifold_path = write_vtp(manifold_mesh(frame, run.manifold()), folder / "manifold.vtp")
    return [boundary_path, manifold_path]
