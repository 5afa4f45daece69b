"""The run report: markdown and self-contained HTML, and the page in headless Chromium.

The browser check runs when Chromium is on PATH (CI installs Debian's `chromium`): the page
must load with no console errors and no network request, and a screenshot of the 3-D view must
show the boundary mesh drawn. Two negative cases show that the check can fail.
"""

from __future__ import annotations

import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from simulator import load_scene, run_scene
from simulator.data import make_dataset
from simulator.formatting import MISSING
from simulator.render.cross_section import plot_cross_sections
from simulator.boundary.frame import default_frame
from simulator.render.interactive import PLOTLY_MARKER, PointLayer, frame_of_mesh, interactive_mesh_html, mesh_arrays
from simulator.render.palette import BOUNDARY_COLOUR, CLASS_COLOURS, MANIFOLD_COLOUR, class_colour
from simulator.report.attack_tables import specificity_text
from simulator.report.html import Section, figure_html, html_page, html_table, md_table
from simulator.report.run_report import find_artifacts, write_report
from simulator.stages.verdict import split_warnings

from browser import browser_check, find_chromium
from conftest import SCENES

REPORT_OVERRIDES = {
    "train.steps": 60, "data.n_train": 200, "data.n_test": 100, "measure.n_points": 30,
    "measure.height_resolution": 12, "measure.final_height_resolution": 16, "measure.attacks.bootstrap": 50,
    "snapshots.count": 5, "train.device": "cpu", "render.cross_section_resolution": 32,
    "render.three_d": False, "render.animation": False,
    # attacks dominate the budget: fewer steps (not-found points stop sooner), the modes MS needs
    "measure.attacks.max_steps": 150, "measure.attacks.modes": ["free", "on", "off", "random_on", "random_off"],
}

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not on PATH (Debian: apt-get install -y "
                                                              "chromium); the HTML page check needs a browser")


def _add_3d_files(folder: Path, final_step: int) -> None:
    """Stand-ins for the 3-D renderer's outputs: boundary meshes, manifold mesh, a render, a GIF."""
    import imageio.v3 as iio
    import pyvista as pv

    boundary = pv.Sphere(radius=0.6)
    # the renderer stores its frame (here n = 3: the identity over a padded box) in the field data
    for name, value in {"frame_origin": np.zeros(3), "frame_axes": np.eye(3), "frame_low": [-1.3, -1.3, -0.7],
                        "frame_high": [1.3, 1.3, 0.7]}.items():
        boundary.field_data[name] = np.asarray(value, dtype=float)
    boundary.save(folder / f"boundary_step{final_step}.vtp")
    pv.Cube(x_length=0.2, y_length=0.2, z_length=0.2).save(folder / "boundary_step0.vtp")  # older: not shown
    pv.Plane(i_size=2.0, j_size=2.0).save(folder / "manifold.vtp")
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[:, :32] = (200, 60, 40)
    iio.imwrite(folder / f"render_step{final_step}.png", image)
    frames = np.zeros((4, 40, 60, 3), dtype=np.uint8)
    for index in range(4):
        frames[index, :, index * 15:(index + 1) * 15] = 255
    iio.imwrite(folder / "animation.gif", frames, duration=200, loop=0)


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """A tiny measured and attacked run of sheet_two_class plus synthetic 3-D files, reported."""
    import torch

    scene = load_scene(SCENES / "sheet_two_class.yaml", overrides=REPORT_OVERRIDES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread avoids OpenMP spin-waits on a busy 2-core box (8x here)
    try:
        summary = run_scene(scene, out_root=tmp_path_factory.mktemp("runs"), progress=False)
    finally:
        torch.set_num_threads(threads)
    _add_3d_files(summary.path, scene.train.steps)
    md_path, html_path = write_report(summary.path)
    return summary.path, md_path, html_path


class _Resources(HTMLParser):
    """Every src/href attribute, and the <img> sources."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.images: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
            if name == "id" and value:
                self.ids.append(value)
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))


def test_markdown_holds_the_verdict_and_ms_exactly(report_run):
    folder, md_path, html_path = report_run
    assert md_path == folder / "report.md" and html_path == folder / "report.html"
    metrics = json.loads((folder / "metrics.json").read_text())
    markdown = md_path.read_text()
    verdict = metrics["geometry"]["snapshots"][-1]["verdict"]
    assert verdict, "the tiny run should have verdict rows"
    warnings, measurements = split_warnings(verdict)
    for row in measurements:
        assert f"| {row['measurement']} |" in markdown
        assert row["measured"] in markdown and row["reading"] in markdown
    assert markdown.count("**Warning:**") >= len(warnings)  # above the table, not in it (plus any from the labels)
    assert f"MS = {specificity_text(metrics['attacks']['final'])}" in markdown
    assert "[" in specificity_text(metrics["attacks"]["final"])  # the bootstrap interval is there
    for row_label in ("PGD (unconstrained)", "on-manifold PGD", "off-manifold PGD", "random-subspace PGD"):
        assert f"| {row_label} |" in markdown
    # scene summary, full YAML, figures linked relatively, the newest boundary mesh
    assert "flat, k = 2, n = 3" in markdown and "```yaml" in markdown and "n_train: 200" in markdown
    for name in ("cross_section.png", "geometry_curves.png", "attack_norms.png", "render_step60.png",
                 "animation.gif", "boundary_step60.vtp"):
        assert f"]({name})" in markdown
    assert "not measured" not in markdown


def test_html_is_self_contained(report_run):
    folder, _, html_path = report_run
    page = html_path.read_text()
    problem = page.find("interactive view not available")
    assert problem < 0, page[problem:problem + 300]  # e.g. plotly not installed
    parser = _Resources()
    parser.feed(page)
    external = [url for url in parser.urls if url.lower().startswith(("http://", "https://", "//"))]
    assert not external, f"resource URLs in the page: {external}"
    assert not [url for url in parser.urls if not url.startswith(("data:", "#"))]  # no files beside it needed
    assert parser.images and all(src.startswith("data:image/") for src in parser.images)
    gifs = [src for src in parser.images if src.startswith("data:image/gif;base64,")]
    assert len(gifs) == 1
    pngs = [p for p in folder.glob("*.png")]
    assert len(parser.images) == len(pngs) + 1  # every PNG (figures and the 3-D render) and the GIF
    # the interactive view: one plotly div, plotly.js inline, the newest boundary
    assert "boundary-3d" in parser.ids and 'class="plotly-graph-div"' in page
    assert page.count("Plotly.newPlot") == 1 and "plotly.js" in page.lower()
    assert "decision boundary (step 60)" in page and "train: class 1" in page
    metrics = json.loads((folder / "metrics.json").read_text())
    assert specificity_text(metrics["attacks"]["final"]) in page
    assert "<details>" in page and "n_train: 200" in page  # the resolved scene, collapsible


def test_report_without_measurements_or_3d_files(report_run, tmp_path):
    folder = tmp_path / "bare"
    shutil.copytree(report_run[0], folder)
    for pattern in ("*.png", "*.vtp", "*.gif", "report.*"):
        for path in folder.glob(pattern):
            path.unlink()
    metrics = json.loads((folder / "metrics.json").read_text())
    del metrics["geometry"], metrics["attacks"]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    md_path, html_path = write_report(folder)
    markdown, page = md_path.read_text(), html_path.read_text()
    assert markdown.count("not measured") >= 3  # verdict, attacks, geometry
    assert "no boundary mesh" in markdown and "no figures" in markdown and "no animation" in markdown
    assert PLOTLY_MARKER not in page and "Plotly.newPlot" not in page and len(page) < 100_000
    assert "<img" not in page


def test_find_artifacts_takes_the_newest_boundary(tmp_path):
    for name in ("boundary_step5.vtp", "boundary_step120.vtp", "boundary_step40.vtp", "manifold.vtp",
                 "cross_section.png", "render_step120.png", "render_step5.png", "extra.png", "animation.gif",
                 "animation.mp4"):
        (tmp_path / name).write_bytes(b"x")
    found = find_artifacts(tmp_path)
    assert found.boundary_mesh.name == "boundary_step120.vtp" and found.boundary_step == 120
    assert found.manifold_mesh.name == "manifold.vtp"
    assert [p.name for p in found.renders] == ["render_step5.png", "render_step120.png"]
    assert [p.name for p in found.figures] == ["cross_section.png"]
    assert [p.name for p in found.other_images] == ["extra.png"]
    assert [p.name for p in found.animations] == ["animation.gif"] and found.videos[0].name == "animation.mp4"
    empty = find_artifacts(tmp_path / "nothing")
    assert empty.boundary_mesh is None and not empty.figures and not empty.animations


def test_building_blocks_escape_and_degrade(tmp_path):
    table = html_table([{"a": "<script>x</script>", "b": 0.123456789}], ["a", "b"], numeric=["b"])
    assert "<script>" not in table and "&lt;script&gt;" in table and '<td class="num">0.1235</td>' in table
    assert md_table([("x|y", None)], ["k", "v"]).splitlines()[-1] == f"| x\\|y | {MISSING} |"
    assert "not found" in figure_html(tmp_path / "missing.png")
    page = html_page("t", [Section("One", "<p>hi</p>"), Section("Two", "<p>there</p>")])
    assert page.startswith("<!DOCTYPE html>") and 'href="#one"' in page and "Plotly" not in page


def test_mesh_arrays_triangulates_and_decimates():
    import pyvista as pv

    vertices, triangles, lines = mesh_arrays(pv.Plane(i_resolution=4, j_resolution=4))  # quads
    assert triangles.shape == (32, 3) and vertices.shape[1] == 3 and not lines
    vertices, triangles, _ = mesh_arrays(pv.Sphere(theta_resolution=120, phi_resolution=120), max_faces=2000)
    assert 0 < len(triangles) <= 2000 and triangles.max() < len(vertices)
    _, triangles, lines = mesh_arrays(pv.Line((0, 0, 0), (1, 1, 1), resolution=4))
    assert len(triangles) == 0 and len(lines) == 1 and len(lines[0]) == 5


def test_stored_frame_selects_the_points_near_the_slice(tmp_path):
    import pyvista as pv

    rng = np.random.default_rng(0)
    axes = np.linalg.qr(rng.standard_normal((6, 3)))[0]  # a 3-D slice of R^6
    origin = rng.standard_normal(6)
    mesh = pv.Sphere()
    for name, value in {"frame_origin": origin, "frame_axes": axes.T, "frame_low": -np.ones(3),
                        "frame_high": np.ones(3)}.items():
        mesh.field_data[name] = value
    mesh.save(tmp_path / "boundary_step3.vtp")
    frame = frame_of_mesh(tmp_path / "boundary_step3.vtp")
    assert np.allclose(frame.axes, axes) and np.allclose(frame.origin, origin)
    p = rng.uniform(-0.9, 0.9, (50, 3))
    near = origin + p @ axes.T  # in the slice
    normal = np.linalg.qr(np.concatenate([axes, rng.standard_normal((6, 1))], axis=1))[0][:, 3]
    far = near + 0.5 * normal  # same projections, far from the slice
    coords, index, slab = frame.select(np.concatenate([near, far]))
    assert slab < 0.5 and sorted(index) == list(range(50)) and np.allclose(coords, p[index])
    assert frame_of_mesh(pv.Sphere()) is None


# --------------------------------------------------------------------------- one palette


def _plotly_traces(fragment: str) -> list[dict]:
    """The data argument of the fragment's Plotly.newPlot call."""
    start = fragment.index("Plotly.newPlot(")
    start = fragment.index("[", start)
    traces, _ = json.JSONDecoder().raw_decode(fragment[start:])
    return traces


def test_class_one_has_the_same_colour_in_the_png_and_the_html_view(tmp_path):
    """The 3-D view's marker colour of class 1 is the colour the PNG cross-section draws class 1
    in (its class regions are that colour lightened: 0.3 colour + 0.7 white)."""
    pytest.importorskip("plotly")
    fragment = interactive_mesh_html([], PointLayer(np.zeros((2, 3)), np.array([0, 1])))
    html_colours = {trace["name"]: trace["marker"]["color"] for trace in _plotly_traces(fragment)}
    html_class_one = html_colours["data: class 1"]
    assert html_class_one == class_colour(1) and html_colours["data: class 0"] != html_class_one

    scene = load_scene(SCENES / "sheet_two_class.yaml", overrides={"data.n_train": 200, "data.n_test": 20,
                                                                        "measure.n_points": 20})
    manifold = scene.manifold.build()
    data = make_dataset(scene, manifold)
    frame = default_frame(manifold, data.x_train, data.u_train, None)
    # A linear model whose class 1 is the half-plane s > 0 of the section (class 0: s < 0).
    model = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(np.stack([np.zeros(3), frame.tangent])))
        model.bias.copy_(torch.tensor([0.0, -float(frame.origin @ frame.tangent)]))
    png = plot_cross_sections(manifold, data, [("linear", model)], frame, tmp_path / "section.png", "t",
                              resolution=40, dpi=60)
    import imageio.v3 as iio

    pixels = iio.imread(png)[..., :3].astype(float).reshape(-1, 3)
    for label, colour in ((1, html_class_one), (0, html_colours["data: class 0"])):
        region = 0.3 * _hex_rgb(colour) + 0.7 * 255  # the cross-section's light shade of the class
        share = np.mean(np.abs(pixels - region).max(axis=1) <= 1.0)
        assert share > 0.05, f"class {label}: its light shade {region} covers {share:.1%} of the PNG"


# --------------------------------------------------------------------------- headless Chromium


def _hex_rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


def _hue_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV hue in degrees and saturation of (..., 3) colours in 0..255."""
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(np.asarray(rgb, dtype=float) / 255)
    return 360 * hsv[..., 0], hsv[..., 1]


def _hue_distance(a, b) -> np.ndarray:
    return np.abs((np.asarray(a) - b + 180) % 360 - 180)


# Pixels within this many degrees of the boundary colour's hue count as boundary.
BOUNDARY_HUE_TOLERANCE = 6.0


def boundary_pixel_share(png: bytes) -> float:
    """Share of pixels with the boundary mesh's hue (any shading, specular highlight or
    transparency over the white page keeps the hue; over the manifold it does not)."""
    from PIL import Image

    boundary_hue, _ = _hue_saturation(_hex_rgb(BOUNDARY_COLOUR))
    # the test relies on the hue: no class or manifold colour in the view may share it
    others, _ = _hue_saturation(np.array([_hex_rgb(c) for c in [*CLASS_COLOURS[:2], MANIFOLD_COLOUR]]))
    assert _hue_distance(others, boundary_hue).min() > 2 * BOUNDARY_HUE_TOLERANCE
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    hue, saturation = _hue_saturation(rgb)
    return float(np.mean((_hue_distance(hue, boundary_hue) < BOUNDARY_HUE_TOLERANCE) & (saturation > 0.15)))


def non_background_share(png: bytes) -> float:
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    return float(np.mean(np.abs(rgb - rgb[0, 0]).sum(axis=-1) > 30))


@needs_chromium
def test_report_page_in_headless_chromium(report_run, tmp_path):
    _, _, html_path = report_run
    check = browser_check(html_path, "#boundary-3d")
    assert check.console_errors == [], check.console_errors
    assert check.external_requests == [], check.external_requests
    assert check.element_found and check.drawn, check.messages
    assert non_background_share(check.screenshot) > 0.05  # the page itself is not blank
    share = boundary_pixel_share(check.element_screenshot)
    (tmp_path / "view3d.png").write_bytes(check.element_screenshot)  # for a look when it fails
    assert share > 0.03, f"boundary colour on {share:.2%} of the 3-D view ({tmp_path / 'view3d.png'})"
    assert non_background_share(check.element_screenshot) > 0.08


@needs_chromium
def test_browser_check_reports_errors_and_requests(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><script src="https://cdn.invalid/plotly.min.js"></script></head>'
                    "<body><img src=\"missing.png\"><script>console.error('explicit');</script>"
                    "<script>notDefined();</script></body></html>")
    check = browser_check(page, timeout=30)
    errors = "\n".join(check.console_errors)
    assert "explicit" in errors and "notDefined" in errors and "missing.png" in errors
    assert check.external_requests == ["https://cdn.invalid/plotly.min.js"]


@needs_chromium
def test_browser_check_sees_an_empty_view(tmp_path):
    """An empty plotly div (no figure drawn) must fail the drawn/pixel checks."""
    empty = (f'<div class="view3d" {PLOTLY_MARKER}="1"><div id="boundary-3d" class="plotly-graph-div" '
             'style="height:620px; width:100%;"></div></div>')
    page = tmp_path / "empty.html"
    page.write_text(html_page("empty", [Section("3-D view", empty)]))
    check = browser_check(page, "#boundary-3d", settle_timeout=2)
    assert check.console_errors == [] and check.element_found and not check.drawn
    assert boundary_pixel_share(check.element_screenshot) < 0.001
    assert non_background_share(check.element_screenshot) < 0.01
