"""The decision boundary of a model in a 3-D frame: the frame (an affine 3-D window of input
space, with the manifold's mesh in it) and the boundary extracted as a triangle mesh.

Computation, not drawing: the seed-agreement experiment measures with it, and the renderers
(simulator.render) draw what it returns.
"""
