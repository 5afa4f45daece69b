"""Off-screen 3-D pictures of a run: manifold, data, decision boundary (pyvista).

    from simulator.render.scene3d import render_run, export_meshes
    png = render_run(load_run("renders/sheet_two_class"))          # final snapshot
    meshes = export_meshes(run)                                    # boundary_step<step>.vtp, manifold.vtp

Everything is drawn in the run's render frame (`simulator.boundary.frame`): for n = 3 the input
space itself, for n > 3 a 3-D slice through a training point (tangent, tangent, normal). The
picture holds the manifold surface (or its trace in the slice), the training points in the
frame coloured by class (for n > 3 those within a slab of the slice, shown at their
projections), the decision boundary as a semi-transparent surface, optionally the free
adversarial perturbations of a few test points as arrows (read from the attack stage's
`attack_distances.npz`, never recomputed; for n > 3 their in-slice component), a legend, and a
title with the scene name and the step. Colours come from `simulator.render.palette`.

The camera looks at the box centre from `render.camera` (azimuth around the frame's third axis,
elevation above its first two; the third axis is the manifold normal for n > 3, so a low
elevation looks along the sheet and shows the dents), then fits the box and applies the zoom.
`BoundaryScene` keeps one plotter and swaps the boundary mesh in place, so an animation
renders every snapshot with the same camera and without rebuilding anything else.

Two things keep a frame cheap in software OpenGL (Mesa's llvmpipe) without changing it:

* The title and the corner text are laid out as pyvista's `add_text(position=<corner>)` lays
  them out (vtkCornerAnnotation: the largest font that fits the window, then
  5 * size^0.35), but searched from a one-measurement estimate instead of VTK's step-by-step
  search from the previous size, which re-rasterised the font at some 60 sizes (14 ms) at
  every text change. Same font sizes, same positions (`CornerText`).
* The surfaces with normals (boundary, manifold) are lit per vertex, with VTK's own lighting
  formula and lights (ambient + diffuse + Phong specular for each light of the light kit,
  two-sided: the back side of a triangle gets the colour of the flipped normal), and the
  colour is interpolated across each triangle (`light_per_vertex`). VTK lights every pixel
  of every translucent layer instead; with boundary triangles of a few pixels the images
  differ by at most a few levels on a few pixels (docs/render_benchmark.md).

pyvista (and VTK) are imported inside functions: the core library never needs them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from simulator.boundary.frame import RenderFrame, manifold_mesh, render_frame
from simulator.boundary.mesh import boundary_mesh
from simulator.formatting import fmt, percent
from simulator.render.headless import (
    INSTALL_HINT,
    RenderingUnavailable,
    ensure_offscreen,
)
from simulator.render.palette import (
    ARROW_COLOUR,
    BOUNDARY_COLOUR,
    MANIFOLD_COLOUR,
    class_colour,
)
from simulator.runs.format import ATTACK_EXTRAS, ATTACK_FILE
from simulator.runs.io import atomic_path, read_arrays
from simulator.training.loop import resolve_device

# The file the attack stage stores its results in: distances per mode, and the free-mode
# perturbation of each attacked point (`free_delta`, NaN rows where none was found) with the
# row of data.x_test it belongs to (`point_index`).
BOUNDARY_OPACITY = 0.55
MANIFOLD_OPACITY = 0.45
LEGEND_SHADES = {BOUNDARY_COLOUR: "#b8860b", MANIFOLD_COLOUR: "#4f6f8f"}
# Point sizes of the title (upper left) and the step/accuracy text (lower right), as given to
# pyvista's add_text: the corner layout scales them (see CornerText).
TITLE_FONT_SIZE = 11
CORNER_FONT_SIZE = 10


def run_device(run):
    """The device the run's scene asks for (train.device), where grids are evaluated."""
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
        ensure_offscreen()  # before pyvista makes its first render window
        import pyvista as pv  # deferred: a heavy library only drawing needs

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
        light_per_vertex(actor, self.plotter.renderer)  # boundary meshes always carry Normals
        self.legend.insert(0, ("decision boundary", BOUNDARY_COLOUR))
        self.draw_legend()
        self.title = CornerText(self.plotter, "upper_left", TITLE_FONT_SIZE, "title")
        self.corner = CornerText(self.plotter, "lower_right", CORNER_FONT_SIZE, "corner")
        self.set_camera(spec.camera.azimuth, spec.camera.elevation, spec.camera.zoom)
        # No depth peeling: with Mesa's llvmpipe (EGL and OSMesa) it drops translucent
        # surfaces altogether. The translucent layers (manifold, boundary) go through VTK's
        # order-independent translucency (weighted blending; on by default). Blending in
        # drawing order instead would save ~7 ms a frame, but then the boundary always covers
        # the sheet, also where the sheet is in front (docs/render_benchmark.md).

    # ------------------------------------------------------------------ static parts

    def _add_static(self) -> None:
        import pyvista as pv  # deferred: a heavy library only drawing needs

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
                if "Normals" in self.manifold.point_data:
                    light_per_vertex(actor, plotter.renderer)
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

    def draw_legend(self) -> None:
        """(Re)draw the legend from `self.legend` ([(label, colour)]), after changing the entries."""
        # Legend text takes its entry's colour, so entries use darker shades of the surfaces.
        widest = max(len(label) for label, _ in self.legend)
        width, height = min(0.6, 0.0125 * widest + 0.05), 0.045 * len(self.legend)
        legend = self.plotter.add_legend(labels=[[label, LEGEND_SHADES.get(colour, colour)]
                                                 for label, colour in self.legend],
                                         bcolor="white", size=(width, height), face="rectangle",
                                         background_opacity=0.85)
        legend.SetPosition(0.99 - width, 0.99 - height)  # pyvista's 'upper right' ignores the size

    def add_adversarial_paths(self, count: int) -> int:
        """Arrows from attacked test points to their stored free minimal adversarial examples.

        The perturbations are those the attack stage stored for the run's last snapshot
        (`attack_distances.npz`); the arrows are those of `adversarial_arrows`. Returns how many
        were drawn: 0 when the run was not attacked (no stored perturbations) or none applies.
        """
        stored = stored_perturbations(self.run.path)
        if stored is None or count <= 0:
            return 0
        point_index, free_delta = stored
        starts, vectors, _ = adversarial_arrows(self.frame, self.run.data.x_test, point_index, free_delta, count)
        if not len(starts):
            return 0
        self.plotter.add_arrows(starts, vectors, mag=1.0, color=ARROW_COLOUR, reset_camera=False,
                                name="adversarial")
        label = "free adversarial perturbation" + ("" if self.frame.ambient_dim == 3 else " (in-slice part)")
        self.legend.append((label, ARROW_COLOUR))
        self.draw_legend()
        return len(starts)

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
        if mesh.n_points and "Normals" not in mesh.point_data:
            # The boundary is lit per vertex from its normals (contour_boundary always makes them).
            mesh = mesh.compute_normals(split_vertices=False, auto_orient_normals=False)
        self.boundary.copy_from(mesh, deep=False)
        self.boundary.Modified()
        self.title.set(title)
        self.corner.set(corner)

    def show_snapshot(self, index: int, mesh=None, device=None):
        """Show snapshot `index` (its boundary computed unless given); returns the boundary mesh."""
        run = self.run
        index = _index(run, index)
        record = run.snapshots[index]
        if mesh is None:
            mesh = boundary_for(run, index, self.frame, device)
        self.show_boundary(mesh, snapshot_title(run, record.step, self.frame, self.slab),
                           f"step {record.step}\ntest accuracy {percent(record.test_accuracy)}")
        return mesh

    def screenshot(self) -> np.ndarray:
        self.plotter.render()  # screenshot() alone may return the previous frame's buffer
        image = self.plotter.screenshot(return_img=True)
        if image is None or image.size == 0:
            raise RenderingUnavailable("the off-screen render returned no image; " + INSTALL_HINT)
        return np.asarray(image)[..., :3]

    def close(self) -> None:
        self.plotter.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class CornerText:
    """A text in a corner of the plotter, laid out as `plotter.add_text(text, position=corner,
    font_size=font_size)` lays it out, but cheap to change.

    pyvista's corner text is a vtkCornerAnnotation: at every change VTK searches, one point at a
    time from the previous size, the largest font size (< 100) at which the text stays under
    90% of the window's width and height and under one window height per line, then draws it at
    int(size^0.35 * (font_size // 2)) points, 5 pixels from the corner. Each size tried
    rasterises the font anew (14 ms per change at 800x600). Here the search starts from the
    size that one measurement predicts and walks to the same answer (widths grow with the size),
    each distinct text is laid out once, and the text is drawn by the same VTK classes
    (vtkTextMapper, vtkActor2D) with the same properties.
    """

    _ANCHORS = {"upper_left": ("left", "top"), "lower_right": ("right", "bottom"),
                "upper_right": ("right", "top"), "lower_left": ("left", "bottom")}
    NONLINEAR_SCALE = 0.35  # vtkCornerAnnotation's defaults
    MAXIMUM_FONT_SIZE = 200
    MINIMUM_FONT_SIZE = 6
    SEARCH_LIMIT = 100

    def __init__(self, plotter, corner: str, font_size: int, name: str, color: str = "black"):
        import pyvista as pv  # deferred: a heavy library only drawing needs
        from vtkmodules.vtkRenderingCore import vtkActor2D, vtkTextMapper

        if corner not in self._ANCHORS:
            raise ValueError(f"corner: one of {sorted(self._ANCHORS)}, got {corner!r}")
        self.plotter, self.corner = plotter, corner
        self.linear_scale = font_size // 2
        self.mapper = vtkTextMapper()
        prop = self.mapper.GetTextProperty()
        prop.ShallowCopy(pv.TextProperty(color=color, orientation=0.0, shadow=False))
        horizontal, vertical = self._ANCHORS[corner]
        prop.SetJustification({"left": 0, "right": 2}[horizontal])
        prop.SetVerticalJustification({"bottom": 0, "top": 2}[vertical])
        self.actor = vtkActor2D()
        self.actor.SetMapper(self.mapper)
        self.actor.SetVisibility(False)
        self._sizes: dict[str, int] = {}
        self._window: tuple[int, int] | None = None
        plotter.add_actor(self.actor, reset_camera=False, name=name, pickable=False, render=False)

    def set(self, text: str) -> None:
        """Show `text` (an empty string hides it)."""
        renderer = self.plotter.renderer
        width, height = (int(v) for v in renderer.GetSize())
        if (width, height) != self._window:
            self._sizes.clear()
            self._window = (width, height)
        if text not in self._sizes:
            self._sizes[text] = self._layout(text, renderer, width, height)
        size = self._sizes[text]
        self.mapper.SetInput(text)
        self.mapper.GetTextProperty().SetFontSize(max(size, 1))
        right, top = self._ANCHORS[self.corner][0] == "right", self._ANCHORS[self.corner][1] == "top"
        self.actor.SetPosition(width - 5 if right else 5, height - 5 if top else 5)
        self.actor.SetVisibility(bool(text) and size >= self.MINIMUM_FONT_SIZE)

    def _layout(self, text: str, renderer, width: int, height: int) -> int:
        """vtkCornerAnnotation's font size for `text` in a (width, height) viewport (see the class)."""
        if not text:
            return 0
        prop = self.mapper.GetTextProperty()
        self.mapper.SetInput(text)
        extent = [0, 0]

        def measure(points: int) -> tuple[int, int]:
            prop.SetFontSize(points)
            self.mapper.GetSize(renderer, extent)
            return extent[0], extent[1]

        target_w, target_h = int(0.9 * width), int(0.9 * height)
        line_limit = height * (text.count("\n") + 1)  # MaximumLineHeight 1: one window height per line

        def fits(points: int) -> bool:  # VTK grows the size while this holds (strict)
            w, h = measure(points)
            return w < target_w and h < target_h and h < line_limit and points < self.SEARCH_LIMIT

        def too_large(points: int) -> bool:  # and shrinks it while this holds
            w, h = measure(points)
            return w > target_w or h > target_h or h > line_limit

        w, h = measure(12)
        if w == 0 and h == 0:
            return 0
        guess = 12 * min(target_w / max(w, 1), target_h / max(h, 1), line_limit / max(h, 1))
        points = int(min(max(guess, 1), self.SEARCH_LIMIT))
        # The first size that no longer fits strictly, then down while it is too large.
        while points > 1 and not fits(points - 1):
            points -= 1
        while fits(points):
            points += 1
        while points > 0 and too_large(points):
            points -= 1
        scaled = int(math.pow(points, self.NONLINEAR_SCALE) * self.linear_scale)
        return min(scaled, self.MAXIMUM_FONT_SIZE)


def light_per_vertex(actor, renderer) -> bool:
    """Light `actor` at its vertices instead of at every pixel; returns whether it was set up.

    The vertex shader evaluates VTK's own lighting of the fragment shader (ambient, then per
    light diffuse max(0, n.l) and specular sign(df) max(1e-5, r.v)^power, for every light of
    the renderer; all directional, as in pyvista's light kit) for the normal and for its
    opposite, and the fragment shader picks one by the side it sees (two-sided lighting, as
    VTK does) and keeps VTK's opacity and translucency handling. For a mesh whose triangles
    span a few pixels this is the same picture at a fraction of the per-pixel cost, which
    dominates in software OpenGL with several translucent layers. The actor's mesh must carry
    point normals. The renderer's lights are read now: change them afterwards and the shading
    is wrong. Nothing is changed (False) when a light is positional or switched off, or for a
    lone headlight (VTK's simpler shader for it has other uniforms).
    """
    lights = [light for light in renderer.GetLights()]
    if not lights or any(light.GetPositional() or not light.GetSwitch() for light in lights):
        return False
    if len(lights) == 1 and lights[0].LightTypeIsHeadlight():
        return False  # VTK's shader for a lone headlight has no light direction uniform
    count = len(lights)
    declarations = "".join(f"uniform vec3 lightColor{i};\nuniform vec3 lightDirectionVC{i};\n" for i in range(count))
    vertex_dec = (
        "//VTK::Light::Dec\n"
        "uniform float ambientIntensity;\nuniform float diffuseIntensity;\nuniform float specularIntensity;\n"
        "uniform vec3 ambientColorUniform;\nuniform vec3 diffuseColorUniform;\nuniform vec3 specularColorUniform;\n"
        "uniform float specularPowerUniform;\n" + declarations +
        "out vec3 frontColorVSOutput;\nout vec3 backColorVSOutput;\n"
    )
    terms = "".join(
        f"  df = max(0.0, dot(n, -lightDirectionVC{i})); dF += df * lightColor{i};\n"
        f"  sf = sign(df) * pow(max(1e-5, dot(reflect(lightDirectionVC{i}, n), view)), specularPowerUniform);"
        f" sF += sf * lightColor{i};\n"
        f"  df = max(0.0, dot(-n, -lightDirectionVC{i})); dB += df * lightColor{i};\n"
        f"  sf = sign(df) * pow(max(1e-5, dot(reflect(lightDirectionVC{i}, -n), view)), specularPowerUniform);"
        f" sB += sf * lightColor{i};\n"
        for i in range(count)
    )
    vertex_impl = (
        "//VTK::Light::Impl\n  {\n"
        "  vec3 n = normalize(normalVCVSOutput);\n"
        "  vec3 view = normalize(-vertexVCVSOutput.xyz);\n"
        "  vec3 dF = vec3(0.0); vec3 sF = vec3(0.0); vec3 dB = vec3(0.0); vec3 sB = vec3(0.0);\n"
        "  float df; float sf;\n" + terms +
        "  vec3 ambient = ambientIntensity * ambientColorUniform;\n"
        "  vec3 diffuseColor = diffuseIntensity * diffuseColorUniform;\n"
        "  vec3 specularColor = specularIntensity * specularColorUniform;\n"
        "  frontColorVSOutput = ambient + dF * diffuseColor + sF * specularColor;\n"
        "  backColorVSOutput = ambient + dB * diffuseColor + sB * specularColor;\n"
        "  }\n"
    )
    shaders = actor.GetShaderProperty()
    shaders.ClearAllShaderReplacements()
    shaders.AddVertexShaderReplacement("//VTK::Light::Dec", True, vertex_dec, False)
    shaders.AddVertexShaderReplacement("//VTK::Light::Impl", True, vertex_impl, False)
    shaders.AddFragmentShaderReplacement("//VTK::Light::Dec", True,
                                         "in vec3 frontColorVSOutput;\nin vec3 backColorVSOutput;\n", False)
    shaders.AddFragmentShaderReplacement(
        "//VTK::Light::Impl", True,
        "  fragOutput0 = vec4(gl_FrontFacing ? frontColorVSOutput : backColorVSOutput, opacity);\n", False)
    return True


def stored_perturbations(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(point_index (N,) int, free_delta (N, n) float64) as the attack stage stored them, or None
    when the run holds none (attacks off, or a run from before perturbations were stored)."""
    path = Path(run_dir) / ATTACK_FILE
    if not path.is_file():
        return None
    stored = read_arrays(path)
    if not all(key in stored for key in ATTACK_EXTRAS):
        return None
    return stored["point_index"].astype(int), stored["free_delta"].astype(float)


def adversarial_arrows(frame: RenderFrame, x_test: np.ndarray, point_index: np.ndarray, free_delta: np.ndarray,
                       count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arrows to draw: (starts (m, 3), vectors (m, 3) in frame coordinates, rows (m,) of the stored arrays).

    Of the attacked points (x_test[point_index]) the first `count` that the frame shows (for
    n > 3: those `frame.select` keeps near the slice) are taken; points whose attack found no
    adversarial (NaN rows of free_delta) are skipped, so m <= count. An arrow runs from the
    point to point + free_delta, both mapped into the frame (for n > 3: the in-slice part).
    """
    attacked = x_test[point_index]
    _, shown, _ = frame.select(attacked, min_points=count)
    rows = shown[:count]
    rows = rows[np.all(np.isfinite(free_delta[rows]), axis=1)]
    starts, _ = frame.from_ambient(attacked[rows])
    ends, _ = frame.from_ambient(attacked[rows] + free_delta[rows])
    return starts, ends - starts, rows


def _short_label(name: str) -> str:
    return {"tangent 1": "t1", "tangent 2": "t2", "tangent": "t", "normal": "n", "normal 2": "n2"}.get(name, name)


def snapshot_title(run, step: int, frame: RenderFrame, slab: float = 0.0) -> str:
    title = f"{run.scene.name}: decision boundary at step {step}"
    if frame.ambient_dim > 3:
        title += f"\n{frame.description};\ntraining points within {fmt(slab, 2)} of the slice, projected onto it"
    return title


# --------------------------------------------------------------------------- files


def write_png(image: np.ndarray, path: Path) -> Path:
    """Write an (h, w, 3) uint8 image as PNG, atomically."""
    import imageio.v3 as iio  # deferred: a heavy library only drawing needs

    path = Path(path)
    with atomic_path(path) as temporary:
        iio.imwrite(temporary, image, extension=".png")
    return path


def write_vtp(mesh, path: Path) -> Path:
    """Write a PolyData as VTK XML (.vtp, ParaView opens it), atomically.

    VTK's writer is called directly because pyvista's save() picks the format from the file
    extension, and the temporary file of an atomic write ends in .tmp.
    """
    from vtkmodules.vtkIOXML import (
        vtkXMLPolyDataWriter,  # deferred: a heavy library only drawing needs
    )

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


def read_vtp(path: Path):
    """A mesh written by `write_vtp`, as PolyData."""
    import pyvista as pv  # heavy: loaded only when a mesh is read

    return pv.read(str(path))


def render_run(run, snapshot_index: int = -1, path: str | Path | None = None, boundary=None) -> Path:
    """Render one snapshot (default the final one) to a PNG; returns its path.

    path: default `<run>/boundary3d_step<step>.png`. boundary: a precomputed boundary mesh of
    that snapshot (from `boundary_for`), to skip the grid evaluation. The final snapshot (the
    one the attack stage attacks) gets render.adversarial_paths arrows of stored perturbations.
    """
    index = _index(run, snapshot_index)
    step = run.snapshots[index].step
    path = Path(path) if path is not None else Path(run.path) / f"boundary3d_step{step}.png"
    with BoundaryScene(run) as scene:
        scene.show_snapshot(index, boundary)
        if run.scene.render.adversarial_paths and index == len(run.snapshots) - 1:
            scene.add_adversarial_paths(run.scene.render.adversarial_paths)
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
