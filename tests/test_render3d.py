"""3-D rendering: render frames, boundary isosurfaces against closed forms, renders, animation,
mesh export, headless selection. Tiny grids and windows, so the file runs in seconds."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from simulator import load_run, load_scene, run_scene
from simulator.data import make_dataset
from simulator.errors import SimulatorError
from simulator.render import headless
from simulator.boundary.mesh import boundary_mesh, margin_grid
from simulator.boundary.frame import RenderFrame, manifold_mesh, render_frame

from conftest import SCENES

CUBE = RenderFrame(np.zeros(3), np.eye(3), -np.ones(3), np.ones(3))


def _spacing(frame: RenderFrame, resolution: int) -> float:
    return float(np.max((frame.high - frame.low) / (resolution - 1)))


# --------------------------------------------------------------------------- isosurfaces


class _Sphere(nn.Module):
    """Two classes with d_0 = |x - centre|^2 - R^2: the boundary is the sphere (no parameters: float64)."""

    def __init__(self, radius: float, centre=(0.0, 0.0, 0.0)):
        super().__init__()
        self.radius, self.centre = radius, torch.tensor(centre, dtype=torch.float64)

    def forward(self, x):
        d = ((x - self.centre.to(x.dtype)) ** 2).sum(dim=1) - self.radius**2
        return torch.stack([d, torch.zeros_like(d)], dim=1)


def _plane_model(a: float, b: float, c: float) -> nn.Linear:
    """A linear 2-class model whose boundary is the plane z = a x + b y + c."""
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-a, -b, 1.0], [0.0, 0.0, 0.0]]))
        model.bias.copy_(torch.tensor([-c, 0.0]))
    return model


@pytest.mark.parametrize("coarse_to_fine", [True, False])
def test_plane_isosurface_is_within_a_grid_spacing_and_covers_the_plane(coarse_to_fine):
    a, b, c, resolution = 0.2, -0.3, 0.1, 24
    mesh = boundary_mesh(_plane_model(a, b, c), CUBE, resolution, coarse_to_fine=coarse_to_fine)
    points = np.asarray(mesh.points, dtype=float)
    distance = np.abs(points[:, 2] - a * points[:, 0] - b * points[:, 1] - c) / math.sqrt(1 + a * a + b * b)
    assert mesh.n_points > 100
    assert distance.max() <= _spacing(CUBE, resolution)
    # |z| <= 0.6 on the square, so the plane crosses the whole box: area = 4 sqrt(1 + a^2 + b^2).
    assert mesh.area == pytest.approx(4 * math.sqrt(1 + a * a + b * b), rel=0.01)


@pytest.mark.parametrize("coarse_to_fine", [True, False])
def test_sphere_isosurface_is_within_a_grid_spacing_and_has_the_sphere_area(coarse_to_fine):
    radius, resolution = 0.55, 24
    mesh = boundary_mesh(_Sphere(radius, (0.1, -0.05, 0.0)), CUBE, resolution, coarse_to_fine=coarse_to_fine)
    r = np.linalg.norm(np.asarray(mesh.points) - [0.1, -0.05, 0.0], axis=1)
    assert np.abs(r - radius).max() <= _spacing(CUBE, resolution)
    assert mesh.area == pytest.approx(4 * math.pi * radius**2, rel=0.03)
    # Every vertex direction is covered: the mesh is the whole sphere, not a cap.
    directions = (np.asarray(mesh.points) - [0.1, -0.05, 0.0]) / r[:, None]
    assert directions.min(axis=0) == pytest.approx(-1, abs=0.05)
    assert directions.max(axis=0) == pytest.approx(1, abs=0.05)


def test_no_boundary_in_the_box_gives_an_empty_mesh():
    mesh = boundary_mesh(_Sphere(5.0), CUBE, 16)
    assert mesh.n_points == 0 and mesh.n_cells == 0


class _ThreeClasses(nn.Module):
    """Logits (x, y, 0): regions meet on three half-planes, total area 4 + 2 sqrt(2) in the cube."""

    def forward(self, x):
        return torch.stack([x[:, 0], x[:, 1], torch.zeros_like(x[:, 0])], dim=1)


def test_three_class_boundary_is_the_union_of_region_boundaries_each_face_once():
    resolution = 25
    mesh = boundary_mesh(_ThreeClasses(), CUBE, resolution, n_classes=3)
    p = np.asarray(mesh.points, dtype=float)
    x, y = p[:, 0], p[:, 1]
    # distance to the nearest of: {x = y, x >= 0}, {x = 0, y <= 0}, {y = 0, x <= 0}
    d01 = np.where((x + y) >= 0, np.abs(x - y) / math.sqrt(2), np.hypot(x, y))
    d02 = np.where(y <= 0, np.abs(x), np.hypot(x, y))
    d12 = np.where(x <= 0, np.abs(y), np.hypot(x, y))
    assert np.minimum(np.minimum(d01, d02), d12).max() <= _spacing(CUBE, resolution)
    # Each face once: drawing both sides of every face would double the area.
    assert mesh.area == pytest.approx(4 + 2 * math.sqrt(2), rel=0.05)


def test_grid_values_are_the_margin_at_the_nodes():
    grid = margin_grid(_Sphere(0.5), CUBE, 9, coarse_to_fine=False)
    axis = np.linspace(-1, 1, 9)
    k, j, i = 8, 3, 1  # values are indexed [k, j, i] (x fastest)
    assert grid.values[k, j, i, 0] == pytest.approx(axis[i] ** 2 + axis[j] ** 2 + axis[k] ** 2 - 0.25, abs=1e-6)


# --------------------------------------------------------------------------- frames


def _scene_data(name: str, overrides: dict | None = None):
    scene = load_scene(SCENES / f"{name}.yaml", overrides={"data.n_train": 300, "data.n_test": 50,
                                                           "measure.n_points": 20, **(overrides or {})})
    manifold = scene.manifold.build()
    return scene, manifold, make_dataset(scene, manifold)


def test_slice_frame_contains_the_tangent_directions_and_the_flat_trace_is_exact():
    scene, manifold, data = _scene_data("subspace_highdim")  # k = 10 flat in n = 100
    frame = render_frame(scene, manifold, data)
    assert frame.axes.shape == (100, 3)
    np.testing.assert_allclose(frame.axes.T @ frame.axes, np.eye(3), atol=1e-12)
    base = data.u_train[frame.base_index]
    assert manifold.belongs(frame.origin, atol=1e-12)
    in_span = frame.axes @ (frame.axes.T @ manifold.tangent_basis(base)[:, :2])
    np.testing.assert_allclose(in_span, manifold.tangent_basis(base)[:, :2], atol=1e-12)
    np.testing.assert_allclose(frame.axes[:, 2], manifold.unit_normal(base), atol=1e-12)
    # The trace of a flat in the slice is the plane normal = 0, exactly, across the whole box.
    trace = manifold_mesh(frame, manifold, resolution=20)
    points = np.asarray(trace.points, dtype=float)
    assert np.abs(points[:, 2]).max() < 1e-9
    assert manifold.belongs(frame.to_ambient(points), atol=1e-9).all()
    assert trace.area == pytest.approx(float(np.prod(frame.high[:2] - frame.low[:2])), rel=1e-6)


def test_slice_point_is_honoured_and_validated():
    scene, manifold, data = _scene_data("subspace_highdim", {"render.slice_point": 7})
    frame = render_frame(scene, manifold, data)
    assert frame.base_index == 7
    np.testing.assert_allclose(frame.origin, manifold.immersion(data.u_train[7]), atol=1e-12)
    scene, manifold, data = _scene_data("subspace_highdim", {"render.slice_point": 10_000})
    with pytest.raises(SimulatorError, match="slice_point"):
        render_frame(scene, manifold, data)


def test_curve_in_high_dimension_gets_a_third_orthonormal_axis():
    scene, manifold, data = _scene_data("sphere_random_labels", {"manifold.dim": 1, "manifold.ambient_dim": 6})
    frame = render_frame(scene, manifold, data)
    np.testing.assert_allclose(frame.axes.T @ frame.axes, np.eye(3), atol=1e-12)
    curve = manifold_mesh(frame, manifold)
    assert curve.n_lines > 0  # the circle lies in the slice (its plane is spanned by tangent, normal)
    points = np.asarray(curve.points, dtype=float)
    interior = frame.inside(points, tol=-1e-6)  # points the box clip added lie on chords
    assert interior.sum() > 50
    assert manifold.belongs(frame.to_ambient(points[interior]), atol=1e-6).all()  # float32 points


def test_box_frame_holds_the_data_and_the_concentric_spheres_stay_apart():
    scene, manifold, data = _scene_data("concentric_spheres")
    frame = render_frame(scene, manifold, data)
    coords, residual = frame.from_ambient(data.x_train)
    assert frame.inside(coords).all() and residual.max() < 1e-12
    mesh = manifold_mesh(frame, manifold, resolution=32)
    radius = np.linalg.norm(np.asarray(mesh.points, dtype=float), axis=1)
    inner, outer = manifold.inner_radius, manifold.outer_radius
    # Two closed spheres, no band of cells joining them.
    assert np.all(np.isclose(radius, inner, atol=1e-6) | np.isclose(radius, outer, atol=1e-6))
    assert mesh.area == pytest.approx(4 * math.pi * (inner**2 + outer**2), rel=0.02)
    flat_scene, flat, flat_data = _scene_data("sheet_two_class")
    flat_frame = render_frame(flat_scene, flat, flat_data)
    sides = flat_frame.high - flat_frame.low
    assert sides[2] >= 0.5 * sides.max() - 1e-12  # a flat sheet still gets room above and below


# --------------------------------------------------------------------------- a tiny trained run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    overrides = {"train.steps": 60, "data.n_train": 200, "data.n_test": 100, "snapshots.count": 5,
                 "train.device": "cpu", "measure.enabled": False, "measure.n_points": 50,
                 "render.first_look": False, "render.three_d": False, "render.animation": False,
                 "render.grid_resolution": 24, "render.window_size": [320, 240]}
    scene = load_scene(SCENES / "sheet_two_class.yaml", overrides=overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and immune to a busy machine
    try:
        summary = run_scene(scene, out_root=tmp_path_factory.mktemp("runs"), progress=False)
    finally:
        torch.set_num_threads(threads)
    return load_run(summary.path)


def test_coarse_to_fine_grid_equals_the_dense_grid_on_a_trained_network(tiny_run):
    frame = render_frame(tiny_run)
    for record in tiny_run.snapshots:
        fine = margin_grid(record.model(), frame, 33, 2)
        dense = margin_grid(record.model(), frame, 33, 2, coarse_to_fine=False)
        assert fine.evaluated < dense.evaluated
        assert np.array_equal(np.sign(fine.values), np.sign(dense.values))


def _image(path):
    import imageio.v3 as iio

    return iio.imread(path).astype(float)


def test_renders_are_not_blank_and_change_over_training(tiny_run, tmp_path):
    from simulator.render.scene3d import boundary_for, render_run

    first = render_run(tiny_run, 0, tmp_path / "first.png")
    last = render_run(tiny_run, -1, tmp_path / "last.png")
    a, b = _image(first)[..., :3], _image(last)[..., :3]
    assert a.shape == b.shape == (240, 320, 3)
    assert a.std() > 20 and b.std() > 20
    assert np.abs(a - b).mean() > 1.0
    assert boundary_for(tiny_run, -1).n_points > 0
    assert render_run(tiny_run).name == f"boundary3d_step{tiny_run.snapshots[-1].step}.png"


def test_adversarial_arrows_are_the_stored_perturbations(tiny_run, tmp_path):
    """Arrows run from each attacked test point to point + its stored free perturbation."""
    from simulator.render.scene3d import ATTACK_FILE, BoundaryScene, adversarial_arrows

    folder = tmp_path / "run"
    shutil.copytree(tiny_run.path, folder)
    run = load_run(folder)
    point_index = np.array([7, 2, 30, 11, 5, 19])  # rows of data.x_test, as the attack stage stores them
    free_delta = 0.1 * np.random.default_rng(3).standard_normal((len(point_index), 3))
    free_delta[1] = np.nan  # the attack found nothing for the second point
    np.savez(folder / ATTACK_FILE, free=np.linalg.norm(free_delta, axis=1), free_delta=free_delta,
             point_index=point_index)
    with BoundaryScene(run) as scene:
        scene.show_snapshot(-1)
        before = scene.screenshot().astype(float)
        drawn = scene.add_adversarial_paths(4)
        after = scene.screenshot().astype(float)
        glyphs = scene.plotter.actors["adversarial"].mapper.dataset
        frame = scene.frame
    # Expected, from the stored arrays alone: the first four attacked points in the box (n = 3:
    # frame coordinates are input coordinates), less the one with no perturbation.
    x = run.data.x_test[point_index]
    first_four = np.flatnonzero(frame.inside(x))[:4]
    assert 1 in first_four  # so the NaN row is among them and must be skipped
    kept = [row for row in first_four if row != 1]
    starts, vectors, rows = adversarial_arrows(frame, run.data.x_test, point_index, free_delta, 4)
    assert drawn == len(kept) == 3 and list(rows) == kept
    np.testing.assert_allclose(starts, x[kept], atol=1e-12)
    np.testing.assert_allclose(starts + vectors, x[kept] + free_delta[kept], atol=1e-12)
    # The glyphs drawn are these arrows: their bounding box holds every start and tip, and
    # reaches beyond them by at most an arrow head's radius (0.1 x the arrow's length).
    ends = np.concatenate([starts, starts + vectors])
    head = 0.1 * np.linalg.norm(vectors, axis=1).max() + 1e-6
    low, high = np.asarray(glyphs.bounds[0::2]), np.asarray(glyphs.bounds[1::2])
    assert np.all(low <= ends.min(axis=0) + 1e-6) and np.all(high >= ends.max(axis=0) - 1e-6)
    assert np.all(low >= ends.min(axis=0) - head) and np.all(high <= ends.max(axis=0) + head)
    assert np.abs(after - before).mean() > 0.05  # and they show in the picture


def test_no_stored_perturbations_no_arrows(tiny_run):
    from simulator.render.scene3d import ATTACK_FILE, BoundaryScene

    assert not (tiny_run.path / ATTACK_FILE).exists()  # the tiny run was not attacked
    with BoundaryScene(tiny_run) as scene:
        assert scene.add_adversarial_paths(4) == 0
        assert "adversarial" not in scene.plotter.actors


def test_animation_has_one_frame_per_snapshot(tiny_run):
    import imageio.v3 as iio

    from simulator.render.animation import animate_run

    gif, mp4 = animate_run(tiny_run, progress=False)
    assert (gif.name, mp4.name) == ("animation.gif", "animation.mp4")
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == len(tiny_run.snapshots)
    assert frames[0].std() > 10
    assert mp4.stat().st_size > 1000
    assert sum(1 for _ in iio.imiter(mp4)) >= 1
    # no temporary files left (the run's own marker, .sim-run, is meant to stay)
    assert [p.name for p in tiny_run.path.iterdir() if p.name.startswith(".")] == [".sim-run"]


def test_exported_meshes_load_back_equal(tiny_run):
    import pyvista

    from simulator.render.scene3d import boundary_for, export_meshes

    boundary = boundary_for(tiny_run, -1)
    paths = export_meshes(tiny_run, boundary=boundary)
    assert [p.name for p in paths] == [f"boundary_step{tiny_run.snapshots[-1].step}.vtp", "manifold.vtp"]
    loaded = pyvista.read(paths[0])
    assert loaded.n_points == boundary.n_points > 0 and loaded.n_cells == boundary.n_cells
    np.testing.assert_allclose(np.asarray(loaded.points), np.asarray(boundary.points))
    np.testing.assert_allclose(np.asarray(loaded.field_data["frame_axes"]), np.eye(3))
    manifold = pyvista.read(paths[1])
    assert manifold.n_points == manifold_mesh(render_frame(tiny_run), tiny_run.manifold()).n_points > 0


# --------------------------------------------------------------------------- headless


def test_headless_picks_osmesa_without_display_or_egl():
    choose = headless.choose_opengl_window
    assert choose(None, egl_available=False, osmesa_available=True) == "vtkOSOpenGLRenderWindow"
    assert choose("", egl_available=True, osmesa_available=True) == "vtkEGLRenderWindow"
    assert choose(":0", egl_available=False, osmesa_available=False) is None  # a display: VTK's default
    assert choose(None, False, False, requested="vtkXOpenGLRenderWindow") == "vtkXOpenGLRenderWindow"
    assert choose(None, False, False, platform="darwin") is None


def test_headless_without_any_backend_says_what_to_install():
    with pytest.raises(SimulatorError, match="apt-get install libosmesa6") as error:
        headless.choose_opengl_window(None, egl_available=False, osmesa_available=False)
    assert isinstance(error.value, headless.RenderingUnavailable)


def test_ensure_offscreen_here(monkeypatch):
    import pyvista

    monkeypatch.setattr(pyvista, "OFF_SCREEN", False)
    window = headless.ensure_offscreen()
    assert pyvista.OFF_SCREEN is True  # it was False before the call
    # The window class it chose is the one VTK will be asked for (None: VTK's own default).
    assert window is None or os.environ[headless.OPENGL_WINDOW_VARIABLE] == window
    # And that window draws: a red sphere shows up in an off-screen screenshot.
    plotter = _offscreen_plotter()
    plotter.add_mesh(pyvista.Sphere(radius=0.5), color="red")
    image = plotter.screenshot(return_img=True).astype(int)
    plotter.close()
    red = (image[..., 0] > 100) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert red.mean() > 0.05


# --------------------------------------------------------------------------- cheap frames, same pictures


def _offscreen_plotter(size=(320, 240)):
    import pyvista

    headless.ensure_offscreen()
    theme = pyvista.themes.DocumentTheme()
    theme.anti_aliasing, theme.multi_samples = None, 1
    return pyvista.Plotter(off_screen=True, window_size=list(size), theme=theme)


@pytest.mark.parametrize("corner", ["upper_left", "lower_right"])
def test_corner_text_draws_what_pyvista_add_text_draws(corner):
    from simulator.render.scene3d import CornerText

    texts = ["sheet_two_class: decision boundary at step 2000", "step 7\ntest accuracy 97.4%"]
    images = []
    for ours in (False, True):
        plotter = _offscreen_plotter()
        if ours:
            label = CornerText(plotter, corner, 11, "label")
        for text in texts:
            if ours:
                label.set(text)
            else:
                plotter.add_text(text, position=corner, font_size=11, color="black", name="label")
            plotter.render()
            images.append(plotter.screenshot(return_img=True).astype(int))
        plotter.close()
    for theirs, ours in zip(images[:2], images[2:]):
        assert theirs.std() > 1  # some text was drawn
        assert np.abs(theirs - ours).max() <= 1


def test_per_vertex_lighting_looks_like_vtk_per_pixel_lighting():
    import pyvista

    from simulator.render.scene3d import light_per_vertex

    surface = pyvista.Sphere(radius=0.5, theta_resolution=120, phi_resolution=120)
    images = []
    for per_vertex in (False, True):
        plotter = _offscreen_plotter()
        actor = plotter.add_mesh(surface, color="#f2c14e", opacity=0.55, specular=0.3)
        actor.prop.interpolation = "gouraud"
        if per_vertex:
            replaced = light_per_vertex(actor, plotter.renderer)
            assert replaced, "light_per_vertex left the lighting to VTK"
        images.append(plotter.screenshot(return_img=True).astype(float))
        plotter.close()
    assert images[0].std() > 10
    assert np.abs(images[0] - images[1]).mean() < 0.5
