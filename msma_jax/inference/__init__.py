"""Inference: reconstruction of photos (`Reconstructor`, `FaceResult`), test-time fitting, exports.

`Reconstructor` and `FaceResult` are imported on first use (they pull in dlib, OpenCV and the
renderer); the export functions are light.
"""
from msma_jax.inference.export import load_coefficients, save_coefficients, save_mesh

__all__ = ["FaceResult", "Reconstructor", "load_coefficients", "save_coefficients", "save_mesh"]

_LAZY = {"Reconstructor": "msma_jax.inference.reconstruct",
         "FaceResult": "msma_jax.inference.result"}


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'msma_jax.inference' has no attribute {name!r}")
