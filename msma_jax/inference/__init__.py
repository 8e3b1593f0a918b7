"""Inference-side utilities: exports (meshes, coefficient files)."""
from msma_jax.inference.export import load_coefficients, save_coefficients, save_mesh

__all__ = ["load_coefficients", "save_coefficients", "save_mesh"]
