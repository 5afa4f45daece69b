"""Everything `sim run` / `sim render` / `sim animate` draw in 3-D, in one call.

Kept apart from the pyvista modules so the pipeline and the CLI share one definition of
"the 3-D outputs of a run": the final boundary render (PNG), its meshes (.vtp) and, when
asked, the training animation (GIF + MP4).
"""

from __future__ import annotations

from pathlib import Path

from simulator.render.animation import animate_run
from simulator.render.headless import ensure_offscreen
from simulator.render.scene3d import boundary_for, export_meshes, render_run


def render_outputs(run, three_d: bool = True, animation: bool = True, progress: bool = True) -> list[Path]:
    """Write the requested 3-D outputs into the run directory; returns the written paths."""
    written: list[Path] = []
    if run.data.ambient_dim < 3:  # a 3-D frame needs three input dimensions
        return written
    ensure_offscreen()
    if three_d:
        boundary = boundary_for(run, -1)  # evaluate the final grid once for both outputs
        written.append(render_run(run, -1, boundary=boundary))
        written += export_meshes(run, -1, boundary=boundary)
    if animation:
        written += list(animate_run(run, progress=progress))
    return written
