"""Geometry of trained decision boundaries relative to the data manifold."""
