"""Manifold families: one module per family, all sharing the `Manifold` interface of `base`."""

from .base import Manifold
from .concentric_spheres import ConcentricSpheres
from .flat import Flat
from .sine_sheet import SineSheet
from .sphere import Sphere
from .swiss_roll import SwissRoll
from .torus import Torus

# Family name (the scene file's `manifold.family`) -> class.
MANIFOLD_FAMILIES: dict[str, type[Manifold]] = {
    cls.family: cls for cls in (Flat, Sphere, Torus, SwissRoll, SineSheet, ConcentricSpheres)
}

__all__ = [
    "MANIFOLD_FAMILIES",
    "ConcentricSpheres",
    "Flat",
    "Manifold",
    "SineSheet",
    "Sphere",
    "SwissRoll",
    "Torus",
]
