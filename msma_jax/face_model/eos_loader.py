"""Optional reader for eos `.bin` morphable models (`pip install eos-py`).

eos models carry shape (and optionally colour) PCA models and triangles but no 68-point landmark
mapping or masks; landmarks come from an iBUG-to-model TOML mapping when given (eos ships them), else
they are left at vertex 0 and the caller must not use landmark losses.
"""
from __future__ import annotations

import pathlib

import numpy as np

from msma_jax.face_model.io import EMBEDDED_CAMERA, FaceModelError, _make


def load_eos_model(path, *, blendshapes=None, landmark_mapping=None):
  try:
    import eos
  except ImportError as e:
    raise FaceModelError(f"{path}: reading eos .bin models needs the optional package eos-py "
                         "(pip install eos-py)") from e
  path = pathlib.Path(path)
  try:
    model = eos.morphablemodel.load_model(str(path))
  except Exception as e:
    raise FaceModelError(f"{path}: eos could not read this model ({e})") from e
  shape = model.get_shape_model()
  mean = np.asarray(shape.get_mean(), np.float64).reshape(-1, 3)
  n = mean.shape[0]
  id_basis = np.asarray(shape.get_rescaled_pca_basis(), np.float64).reshape(n, 3, -1)
  if blendshapes is not None:
    bs = eos.morphablemodel.load_blendshapes(str(blendshapes))
    exp_basis = np.stack([np.asarray(b.deformation).reshape(n, 3) for b in bs], -1)
    names = tuple(b.name for b in bs)
  else:
    exp_basis, names = np.zeros((n, 3, 0)), ()
  if model.has_color_model():
    colour = model.get_color_model()
    mean_albedo = np.asarray(colour.get_mean()).reshape(n, 3)
    tex_basis = np.asarray(colour.get_rescaled_pca_basis()).reshape(n, 3, -1)
  else:
    mean_albedo, tex_basis = np.tile([0.7, 0.5, 0.4], (n, 1)), np.zeros((n, 3, 0))
  landmarks = np.zeros(68, np.int64)
  if landmark_mapping is not None:
    import re
    for line in pathlib.Path(landmark_mapping).read_text().split("[contour_landmarks]")[0].splitlines():
      m = re.match(r"\s*(\d+)\s*=\s*(\d+)", line)
      if m:
        landmarks[int(m.group(1)) - 1] = int(m.group(2))
  uv = np.asarray(model.get_texture_coordinates(), np.float64)
  arrays = dict(mean_shape=mean - mean.mean(0), id_basis=id_basis, exp_basis=exp_basis,
                mean_albedo=mean_albedo, tex_basis=tex_basis,
                triangles=np.asarray(shape.get_triangle_list(), np.int64), landmark_indices=landmarks,
                skin_mask=np.ones(n), face_mask=np.ones(n, bool),
                uv=uv if uv.shape == (n, 2) else None)
  return _make(arrays, source=path, name=path.stem, unit="mm", unit_in_mm=1.0,
               camera=EMBEDDED_CAMERA, expression_names=names)
