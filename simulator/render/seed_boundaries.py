"""seed_boundaries.png: the decision boundaries of several seeds in one picture (pyvista, off
screen), beside a view from above of their parts near the manifold. Used by
`simulator.experiments.seed_agreement`. One colour per model (`palette.seed_colour`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.formatting import fmt, percent
from simulator.render.palette import SEED_COLOURS, seed_colour
from simulator.render.scene3d import BoundaryScene, write_png

# The second view is seen from TOP_ELEVATION degrees (90 would make the camera's up vector
# parallel to the view direction).
TOP_ELEVATION = 80.0


def render_seed_boundaries(run, frame, meshes, seeds, band: float, frame_disagreement: float,
                           mean_chamfer: float) -> Path:
    """All S boundaries in one off-screen picture (manifold and data as in the 3-D render), beside
    a view from above of only their parts within `band` of the manifold: translucent walls pile
    up in the first view, while the second shows where each seed's boundary crosses the data."""
    import pyvista as pv  # deferred: a heavy library that only 3-D pictures need

    manifold = run.manifold()
    with BoundaryScene(run, frame) as picture:
        # The scene's own single-boundary entry makes way for one entry per model.
        picture.legend = [entry for entry in picture.legend if entry[0] != "decision boundary"]
        opacity = 0.5 if len(meshes) <= 3 else 0.35
        walls, crossings = [], []
        for i, (seed, mesh) in enumerate(zip(seeds, meshes)):
            colour = seed_colour(i, len(meshes))
            if mesh.n_points:
                walls.append(picture.plotter.add_mesh(mesh, color=colour, opacity=opacity, specular=0.3,
                                                      reset_camera=False))
                walls[-1].prop.interpolation = "gouraud"
                near = _near_manifold(mesh, frame, manifold, band)
                if near.n_points:
                    crossings.append(picture.plotter.add_mesh(near, color=colour, reset_camera=False))
                    crossings[-1].visibility = False
            if len(meshes) <= len(SEED_COLOURS):
                picture.legend.insert(i, (f"model {i} (seed {seed})", colour))
        if len(meshes) > len(SEED_COLOURS):
            picture.legend.insert(0, (f"{len(meshes)} boundaries (viridis by model)", seed_colour(0, len(meshes))))
        picture.draw_legend()
        title = f"{run.scene.name}: {len(meshes)} seeds"
        if frame.ambient_dim > 3:
            title += f"\n{frame.description}"
        corner = f"disagreement in the frame {percent(frame_disagreement)}\nmean Chamfer {fmt(mean_chamfer, 3)}"
        picture.show_boundary(pv.PolyData(), title, corner)
        views = [picture.screenshot()]
        for actor in walls:
            actor.visibility = False
        for actor in crossings:
            actor.visibility = True
        camera = run.scene.render.camera
        picture.set_camera(camera.azimuth, TOP_ELEVATION, camera.zoom)
        picture.show_boundary(pv.PolyData(), f"from above: within {fmt(band, 2)}\nof the manifold", "")
        views.append(picture.screenshot())
    return write_png(np.concatenate(views, axis=1), Path(run.path) / "seed_boundaries.png")


def _near_manifold(mesh, frame, manifold, band: float):
    """The part of a boundary mesh (frame coordinates) within `band` of the manifold (in R^n)."""
    points = frame.to_ambient(np.asarray(mesh.points, dtype=float))
    mesh = mesh.copy(deep=False)
    mesh.point_data["distance"] = np.linalg.norm(points - manifold.projection(points), axis=-1)
    return mesh.clip_scalar(scalars="distance", value=band, invert=True).extract_surface(algorithm="dataset_surface")
