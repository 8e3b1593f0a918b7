"""Morphable face models: data (`FaceModel`), coefficients, loaders and the decoder."""
from msma_jax.face_model.coefficients import (BFM_SIZES, FIELDS, CoefficientError, Coefficients,
                                              CoefficientSizes, validate_coefficients)
from msma_jax.face_model.io import (FaceModelError, available_face_models, face_model_license,
                                    load_bfm_front_mat, load_face_model, load_npz, save_npz)
from msma_jax.face_model.model import CameraDefaults, FaceModel

__all__ = [
    "BFM_SIZES", "FIELDS", "CameraDefaults", "CoefficientError", "CoefficientSizes", "Coefficients",
    "FaceModel", "FaceModelError", "available_face_models", "face_model_license", "load_bfm_front_mat", "load_face_model",
    "load_npz", "save_npz", "validate_coefficients",
]
