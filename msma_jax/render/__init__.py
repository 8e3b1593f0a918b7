"""Pure-JAX differentiable rendering: rasterize, interpolate, antialias, render_face."""
from msma_jax.render.antialias import antialias, triangle_neighbors
from msma_jax.render.interpolate import coverage, interpolate
from msma_jax.render.rasterize import (Fragments, RenderForms, barycentrics, rasterize,
                                       visibility)
from msma_jax.render.render_face import RenderOutput, render_face

__all__ = ["Fragments", "RenderForms", "RenderOutput", "antialias", "barycentrics", "coverage",
           "interpolate", "rasterize", "render_face", "triangle_neighbors", "visibility"]
