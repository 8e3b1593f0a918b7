"""msma-jax: multi-scale large-kernel-attention 3D face reconstruction in JAX/Flax."""
__version__ = "0.1.0"

from msma_jax.face_model import (Coefficients, CoefficientSizes, FaceModel, load_face_model)

__all__ = ["Coefficients", "CoefficientSizes", "FaceModel", "__version__", "load_face_model"]
