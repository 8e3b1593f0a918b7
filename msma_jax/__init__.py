"""msma-jax: multi-scale large-kernel-attention 3D face reconstruction in JAX/Flax."""
__version__ = "0.1.0"

from msma_jax.face_model import (Coefficients, CoefficientSizes, FaceModel, load_face_model)

__all__ = ["Coefficients", "CoefficientSizes", "FaceModel", "FaceResult", "Reconstructor",
           "__version__", "load_face_model"]

# Imported on first use: the reconstruction API pulls in dlib, OpenCV and the renderer.
_LAZY = {"Reconstructor": "msma_jax.inference.reconstruct",
         "FaceResult": "msma_jax.inference.result"}


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'msma_jax' has no attribute {name!r}")
