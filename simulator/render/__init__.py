"""Rendering (matplotlib, later pyvista). Imported lazily: the core library never needs it."""
