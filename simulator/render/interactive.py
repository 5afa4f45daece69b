"""The offline interactive 3-D view: a rotatable plotly (WebGL) figure of surface meshes and points.

`interactive_mesh_html` turns surface meshes (`.vtp` files or pyvista meshes: the decision
boundary, the manifold) and optional data points into a plotly WebGL figure, in the palette's
colours (`simulator.render.palette`, the same as the PNG figures and the pyvista render). The
fragment it returns does not carry plotly.js itself: a page includes `plotly_js_html()` once
(inline, so the page works with no network), which `simulator.report.html.html_page` does on
its own whenever a section contains `PLOTLY_MARKER`.

pyvista and plotly are imported inside functions: the core library never needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from simulator.boundary.frame import RenderFrame
from simulator.render.palette import BOUNDARY_COLOUR, class_colour

# Present in every fragment that needs plotly.js on the page.
PLOTLY_MARKER = "data-needs-plotly"


@dataclass
class MeshLayer:
    """One surface (or curve) in the view: a `.vtp` path or a pyvista mesh."""

    name: str
    mesh: Any  # str | Path | pyvista.DataSet
    color: str = BOUNDARY_COLOUR
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
    import pyvista as pv  # deferred: a heavy library only drawing needs

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


def frame_of_mesh(mesh: Any) -> RenderFrame | None:
    """The render frame the 3-D renderer stored in a `.vtp`'s field data, or None.

    A point p of the mesh is the input-space point frame.to_ambient(p); `frame.select(x)` gives
    the data points the renderer draws in that frame.
    """
    import pyvista as pv  # deferred: a heavy library that only meshes need

    if isinstance(mesh, (str, Path)):
        mesh = pv.read(str(mesh))
    names = ("frame_origin", "frame_axes", "frame_low", "frame_high")
    if not all(name in mesh.field_data for name in names):
        return None
    origin = np.asarray(mesh.field_data["frame_origin"], dtype=float).ravel()
    axes = np.asarray(mesh.field_data["frame_axes"], dtype=float).reshape(3, origin.size).T  # stored as (3, n)
    return RenderFrame(origin, axes, np.asarray(mesh.field_data["frame_low"], dtype=float).ravel(),
                       np.asarray(mesh.field_data["frame_high"], dtype=float).ravel())


def _n_polys(mesh) -> int:
    return int(mesh.GetNumberOfPolys()) + int(mesh.GetNumberOfStrips())


def _traces(layers: Sequence[MeshLayer], points: PointLayer | None) -> list:
    import plotly.graph_objects as go  # deferred: a heavy library only drawing needs

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
                marker={"size": points.size, "color": class_colour(label)},
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
    import plotly.graph_objects as go  # deferred: a heavy library only drawing needs
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
    from plotly.offline import (
        get_plotlyjs,  # deferred: a heavy library only drawing needs
    )

    return ('<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>\n'
            f'<script type="text/javascript">{get_plotlyjs()}</script>')
