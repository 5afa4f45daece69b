"""The offline interactive 3-D view, and a headless-Chromium check of pages that show it.

`interactive_mesh_html` turns surface meshes (`.vtp` files or pyvista meshes: the decision
boundary, the manifold) and optional data points into a plotly WebGL figure. The fragment it
returns does not carry plotly.js itself: a page includes `plotly_js_html()` once (inline, so the
page works with no network), which `simulator.report.html_page` does on its own whenever a
section contains `PLOTLY_MARKER`.

`browser_check` opens a page in headless Chromium over the DevTools protocol (a pipe, no
network port) and returns every console error, uncaught exception, failed load and request to
a non-local URL, plus a screenshot of the page and of one element. Tests use it to show that a
report loads cleanly offline and that its 3-D view is actually drawn.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# Present in every fragment that needs plotly.js on the page.
PLOTLY_MARKER = "data-needs-plotly"

BOUNDARY_COLOR = "#e4572e"  # warm red-orange: stands out from the grey-blue manifold and the classes
MANIFOLD_COLOR = "#7f9cbf"
CLASS_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


@dataclass
class MeshLayer:
    """One surface (or curve) in the view: a `.vtp` path or a pyvista mesh."""

    name: str
    mesh: Any  # str | Path | pyvista.DataSet
    color: str = BOUNDARY_COLOR
    opacity: float = 0.6
    max_faces: int = 40_000  # decimated above this (quadric decimation) to keep the page light


@dataclass
class PointLayer:
    """Scatter points (e.g. training data), coloured by integer label."""

    points: np.ndarray  # (N, 3)
    labels: np.ndarray | None = None
    name: str = "data"
    size: float = 2.5
    max_points: int = 2000


def mesh_arrays(mesh: Any, max_faces: int = 40_000) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(vertices (N, 3) float32, triangles (M, 3) int32, polylines [index arrays]) of a mesh.

    Polygons are triangulated; meshes above `max_faces` triangles are decimated.
    """
    import pyvista as pv

    if isinstance(mesh, (str, Path)):
        mesh = pv.read(str(mesh))
    if not isinstance(mesh, pv.PolyData):
        try:
            mesh = mesh.extract_surface(algorithm=None)
        except TypeError:  # pyvista before 0.47 has no `algorithm`
            mesh = mesh.extract_surface()
    points = np.asarray(mesh.points, dtype=np.float32)
    lines: list[np.ndarray] = []
    if mesh.n_lines:
        cells, i = np.asarray(mesh.lines), 0
        while i < len(cells):
            count = int(cells[i])
            lines.append(np.asarray(cells[i + 1:i + 1 + count]))
            i += count + 1
    triangles = np.zeros((0, 3), dtype=np.int32)
    if _n_polys(mesh):
        surface = pv.PolyData(mesh.points, faces=mesh.faces, strips=mesh.strips).triangulate()
        if surface.n_cells > max_faces:
            surface = surface.decimate(1.0 - max_faces / surface.n_cells)
        triangles = np.asarray(surface.faces).reshape(-1, 4)[:, 1:].astype(np.int32)
        if lines:  # keep both in one vertex array
            triangles = triangles + len(points)
            points = np.concatenate([points, np.asarray(surface.points, dtype=np.float32)])
        else:
            points = np.asarray(surface.points, dtype=np.float32)
    return points, triangles, lines


def frame_of_mesh(mesh: Any) -> dict | None:
    """The render frame stored in a `.vtp`'s field data by the 3-D renderer, or None.

    {"origin": (n,), "axes": (n, 3) orthonormal columns, "low": (3,), "high": (3,)}: a point
    p of the mesh is the input-space point origin + axes @ p.
    """
    import pyvista as pv

    if isinstance(mesh, (str, Path)):
        mesh = pv.read(str(mesh))
    names = ("frame_origin", "frame_axes", "frame_low", "frame_high")
    if not all(name in mesh.field_data for name in names):
        return None
    origin = np.asarray(mesh.field_data["frame_origin"], dtype=float).ravel()
    axes = np.asarray(mesh.field_data["frame_axes"], dtype=float).reshape(3, origin.size).T  # stored as (3, n)
    return {"origin": origin, "axes": axes, "low": np.asarray(mesh.field_data["frame_low"], dtype=float).ravel(),
            "high": np.asarray(mesh.field_data["frame_high"], dtype=float).ravel()}


def points_in_frame(x: np.ndarray, frame: dict, min_points: int = 20) -> tuple[np.ndarray, np.ndarray, float]:
    """(frame coordinates (m, 3), indices into x, slab half-thickness) of the points to draw.

    The renderer's rule: for n = 3 every point in the box; for n > 3 the points within a slab
    around the slice (5% of the smallest box half-side, widened until `min_points` qualify),
    drawn at their projections.
    """
    offset = np.asarray(x, dtype=float) - frame["origin"]
    coords = offset @ frame["axes"]
    residual = np.linalg.norm(offset - coords @ frame["axes"].T, axis=-1)
    in_box = np.all((coords >= frame["low"]) & (coords <= frame["high"]), axis=-1)
    if frame["origin"].size == 3:
        return coords[in_box], np.flatnonzero(in_box), 0.0
    slab = 0.05 * float(np.min(frame["high"] - frame["low"]) / 2)
    candidates = np.sort(residual[in_box])
    if len(candidates) >= min_points and candidates[min_points - 1] > slab:
        slab = float(candidates[min_points - 1])
    chosen = in_box & (residual <= slab)
    return coords[chosen], np.flatnonzero(chosen), slab


def _n_polys(mesh) -> int:
    return int(mesh.GetNumberOfPolys()) + int(mesh.GetNumberOfStrips())


def _traces(layers: Sequence[MeshLayer], points: PointLayer | None) -> list:
    import plotly.graph_objects as go

    traces = []
    for layer in layers:
        vertices, triangles, lines = mesh_arrays(layer.mesh, layer.max_faces)
        if len(triangles):
            traces.append(go.Mesh3d(
                x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2],
                i=triangles[:, 0], j=triangles[:, 1], k=triangles[:, 2],
                color=layer.color, opacity=layer.opacity, name=layer.name, showlegend=True,
                hoverinfo="name", flatshading=False,
                lighting={"ambient": 0.55, "diffuse": 0.8, "specular": 0.15, "roughness": 0.6},
            ))
        if lines:
            xyz = [[], [], []]
            for line in lines:
                for axis in range(3):
                    xyz[axis].extend(vertices[line, axis].tolist() + [None])
            traces.append(go.Scatter3d(x=xyz[0], y=xyz[1], z=xyz[2], mode="lines", name=layer.name,
                                       line={"color": layer.color, "width": 4}, hoverinfo="name"))
        if not len(triangles) and not lines and len(vertices):
            traces.append(go.Scatter3d(x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2], mode="markers",
                                       name=layer.name, marker={"color": layer.color, "size": 2}))
    if points is not None and len(points.points):
        xyz = np.asarray(points.points, dtype=np.float32)
        labels = np.zeros(len(xyz), dtype=int) if points.labels is None else np.asarray(points.labels).astype(int)
        if len(xyz) > points.max_points:  # an even, deterministic subsample
            keep = np.linspace(0, len(xyz) - 1, points.max_points).astype(int)
            xyz, labels = xyz[keep], labels[keep]
        for label in np.unique(labels):
            chosen = xyz[labels == label]
            traces.append(go.Scatter3d(
                x=chosen[:, 0], y=chosen[:, 1], z=chosen[:, 2], mode="markers",
                name=f"{points.name}: class {label}",
                marker={"size": points.size, "color": CLASS_COLORS[int(label) % len(CLASS_COLORS)]},
            ))
    return traces


def camera_eye(azimuth_deg: float = 35.0, elevation_deg: float = 22.0, zoom: float = 1.0) -> dict:
    """A plotly camera eye from azimuth/elevation in degrees (about the render's viewpoint)."""
    azimuth, elevation = np.radians(azimuth_deg), np.radians(elevation_deg)
    radius = 2.2 / max(zoom, 1e-3)
    return {"x": float(radius * np.cos(elevation) * np.cos(azimuth - np.pi / 2)),
            "y": float(radius * np.cos(elevation) * np.sin(azimuth - np.pi / 2)),
            "z": float(radius * np.sin(elevation))}


def interactive_mesh_html(meshes: Sequence[MeshLayer], points: PointLayer | None = None, *,
                          div_id: str = "view3d", height: int = 600, title: str | None = None,
                          camera: dict | None = None, axis_titles: Sequence[str] = ("x", "y", "z")) -> str:
    """An HTML fragment (div + script) with a rotatable 3-D view of the meshes and points.

    plotly.js is not included: put `plotly_js_html()` in the page once (html_page does it).
    """
    import plotly.graph_objects as go
    import plotly.io as pio

    figure = go.Figure(_traces(meshes, points))
    scene = {"aspectmode": "data", "xaxis": {"title": {"text": axis_titles[0]}},
             "yaxis": {"title": {"text": axis_titles[1]}}, "zaxis": {"title": {"text": axis_titles[2]}}}
    if camera is not None:
        scene["camera"] = {"eye": camera}
    figure.update_layout(
        template="plotly_white", height=height, margin={"l": 0, "r": 0, "t": 40 if title else 10, "b": 0},
        title={"text": title} if title else None, scene=scene,
        legend={"orientation": "h", "yanchor": "bottom", "y": 0.0, "x": 0.0, "bgcolor": "rgba(255,255,255,0.7)"},
    )
    fragment = pio.to_html(figure, include_plotlyjs=False, full_html=False, div_id=div_id,
                           default_height=f"{height}px", default_width="100%",
                           config={"displaylogo": False, "responsive": True,
                                   "toImageButtonOptions": {"filename": div_id}})
    return f'<div class="view3d" {PLOTLY_MARKER}="1">{fragment}</div>'


def plotly_js_html() -> str:
    """plotly.js inline in a <script> tag (about 4.8 MB): the page needs no network."""
    from plotly.offline import get_plotlyjs

    return ('<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>\n'
            f'<script type="text/javascript">{get_plotlyjs()}</script>')


# --------------------------------------------------------------------------- headless browser check

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Offline-friendly flags that work as root on a server with no display. SwiftShader gives WebGL
# (plotly's 3-D views) without a GPU.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-quic", "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
    "--mute-audio", "--hide-scrollbars", "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageCheck:
    """What a headless browser saw on a page."""

    console_errors: list[str] = field(default_factory=list)  # console.error/assert, uncaught exceptions, log errors
    external_requests: list[str] = field(default_factory=list)  # any URL not file:, data:, blob:, about:
    screenshot: bytes = b""  # PNG of the viewport
    element_screenshot: bytes | None = None  # PNG of the selected element (None: not found)
    element_found: bool = False
    drawn: bool = False  # the element held a canvas when the screenshot was taken
    messages: list[str] = field(default_factory=list)  # every console message, for diagnostics


def _high_fd(fd: int, minimum: int = 10) -> int:
    """A duplicate of `fd` numbered `minimum` or above (the original is closed)."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, minimum)
    os.close(fd)
    return high


class _DevToolsPipe:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, executable: str, extra_flags: Sequence[str], profile: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # The child's ends are moved to fds 3 and 4; keep them clear of those numbers first.
        to_chrome_r, from_chrome_w = (_high_fd(fd) for fd in (to_chrome_r, from_chrome_w))
        command = [executable, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}",
                   "--remote-debugging-pipe", "about:blank"]

        def child_pipes():  # Chromium reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        # close_fds=False: the parent's own fds are close-on-exec anyway, and 3/4 must survive
        self.process = subprocess.Popen(command, preexec_fn=child_pipes, close_fds=False, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict | None:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._from_chrome], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe: " + self._stderr_tail())
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _stderr_tail(self) -> str:
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "(Chromium still running)"
        if self.process.stderr is None:
            return ""
        return self.process.stderr.read().decode(errors="replace")[-2000:]

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply is None:
                raise TimeoutError(f"DevTools: no answer to {method} within {timeout} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        for index, event in enumerate(self.events):
            if event["method"] == method:
                return event
        while True:
            event = self._read_message(deadline)
            if event is None:
                return None
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (event := self._read_message(deadline)) is not None:
            if "method" in event:
                self.events.append(event)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                os.write(self._to_chrome, json.dumps({"id": 10**9, "method": "Browser.close"}).encode() + b"\0")
                self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for fd in (self._to_chrome, self._from_chrome):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.process.stderr is not None:
                self.process.stderr.close()


def _evaluate(pipe: _DevToolsPipe, session: str, expression: str, timeout: float = 30.0) -> Any:
    result = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                       session, timeout)
    return result.get("result", {}).get("value")


def _remote_object_text(value: dict) -> str:
    if "value" in value:
        return str(value["value"])
    return value.get("description", value.get("type", "?"))


def browser_check(page: str | Path, selector: str | None = None, *, window: tuple[int, int] = (1280, 1000),
                  settle_timeout: float = 20.0, timeout: float = 60.0, executable: str | None = None) -> PageCheck:
    """Open `page` (a local HTML file) in headless Chromium and report what happened.

    Waits for the load event, then (with `selector`) until that element holds a drawn plotly
    figure (a canvas, and plotly's layout object) or `settle_timeout` passes; then two animation
    frames, then screenshots. Raises FileNotFoundError when no Chromium is on PATH.
    """
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no Chromium on PATH (Debian: apt-get install -y chromium)")
    url = Path(page).resolve().as_uri()
    check = PageCheck()
    with tempfile.TemporaryDirectory(prefix="sim-chromium-") as profile:
        pipe = _DevToolsPipe(executable, [f"--window-size={window[0]},{window[1]}"], profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for method in ("Runtime.enable", "Log.enable", "Network.enable", "Page.enable"):
                pipe.send(method, session=session)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False}, session)
            pipe.events.clear()
            pipe.send("Page.navigate", {"url": url}, session)
            if pipe.wait_event("Page.loadEventFired", timeout) is None:
                check.console_errors.append(f"page did not finish loading within {timeout} s")
            if selector is not None:
                probe = (f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return 'missing';"
                         " const d = e.classList.contains('plotly-graph-div') ? e : e.querySelector('.plotly-graph-div');"
                         " return (d && d._fullLayout && e.querySelector('canvas')) ? 'drawn' : 'waiting'; })()")
                deadline = time.monotonic() + settle_timeout
                state = _evaluate(pipe, session, probe)
                while state == "waiting" and time.monotonic() < deadline:
                    pipe.pump(0.2)
                    state = _evaluate(pipe, session, probe)
                check.element_found = state != "missing"
                check.drawn = state == "drawn"
            _evaluate(pipe, session, "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            pipe.pump(0.5)
            check.screenshot = base64.b64decode(
                pipe.send("Page.captureScreenshot", {"format": "png"}, session, timeout)["data"])
            if selector is not None and check.element_found:
                rect = _evaluate(pipe, session, (
                    f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                    " const r = e.getBoundingClientRect(); return {x: r.left + window.scrollX,"
                    " y: r.top + window.scrollY, width: r.width, height: r.height}; })()"))
                _evaluate(pipe, session, "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                if rect and rect["width"] > 0 and rect["height"] > 0:
                    clip = {**rect, "scale": 1}
                    check.element_screenshot = base64.b64decode(
                        pipe.send("Page.captureScreenshot", {"format": "png", "clip": clip}, session, timeout)["data"])
            pipe.pump(0.2)
        finally:
            pipe.close()
    for event in pipe.events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_object_text(arg) for arg in params.get("args", []))
            check.messages.append(f"console.{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                check.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "exception")
            check.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            check.messages.append(f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".strip())
            if entry.get("level") == "error":
                check.console_errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            request_url = params.get("request", {}).get("url", "")
            if request_url.split(":", 1)[0] not in ("file", "data", "blob", "about"):
                check.external_requests.append(request_url)
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            check.console_errors.append(f"load failed: {params.get('errorText')}")
    return check
