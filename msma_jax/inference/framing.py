"""Moving coefficients between two framings of the same picture.

Coefficients describe a face seen by the face model's default camera in a crop. When a crop A is
a scaled and shifted copy of a crop B (A = s · B + t in pixels, `AlignTransform`), the face that
renders at some place in A renders in B at (place - t) / s. This module gives the coefficients that
do that in B: shape and light unchanged; the translation moves the face so that its centre lands
where it should and its depth scales by s (the image size of a face is inversely proportional to
its depth); the head turns with the line of sight to its centre, so the camera sees the same side of
it as before (a face moved off-axis in a perspective camera would otherwise appear turned). This is
exact for the face's centre and its scale at the centre's depth; the change of perspective
foreshortening with depth is not modelled: landmarks move by 0.1 px on average (0.4 px at most)
at 224 px for shifts of 10 px and scale changes of 5 % (tests/test_reconstruct.py).
"""
from __future__ import annotations

import numpy as np

from data_pipelines.alignment import AlignTransform
from msma_jax import camera as cam
from msma_jax.face_model import Coefficients, FaceModel


def reframe(face_model: FaceModel, coeffs: Coefficients, transform: AlignTransform) -> Coefficients:
  """Coefficients (any batch shape; NumPy or JAX) of crop A -> the same faces in crop B, with
  A = transform.scale · B + transform.translation in pixels; both crops `transform.size` px (the
  default camera of that size). One transform for all faces given."""
  camera = cam.Camera.for_face_model(face_model, int(transform.size))
  trans = np.asarray(coeffs.trans, np.float64)
  depth = camera.distance - trans[..., 2]
  centre_a = np.asarray(cam.project(trans, camera), np.float64)          # [..., 2] crop A pixels
  centre_b = transform.to_image(centre_a)                                  # crop B pixels (A's scale)
  # Deep3DFaceRecon's crops scale x and y by a hair apart (whole-pixel resizes): their mean here.
  new_depth = float(np.sqrt(np.prod(transform.scales))) * depth
  cx, cy = camera.principal
  tx = (centre_b[..., 0] - cx) * new_depth / camera.focal
  ty = -(centre_b[..., 1] - cy) * new_depth / camera.focal
  tz = camera.distance - new_depth
  new = np.stack([tx, ty, tz], -1)
  eye = np.array([0.0, 0.0, camera.distance])
  turn = _rotation_between(trans - eye, new - eye)                       # [..., 3, 3]
  rotation = np.asarray(cam.euler_to_rotation(np.asarray(coeffs.angle, np.float64)))
  angle = np.asarray(cam.rotation_to_euler(turn @ rotation))
  return coeffs.replace(trans=new.astype(np.float32), angle=angle.astype(np.float32))


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[..., 3, 3] the smallest rotation taking direction a [..., 3] to direction b (Rodrigues)."""
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  v = np.cross(a, b)
  c = np.sum(a * b, -1)[..., None, None]
  k = np.zeros((*v.shape[:-1], 3, 3))
  k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
  k = k - np.swapaxes(k, -1, -2)
  # R = I + K + K^2 / (1 + c); the directions here are never opposite (both in front of the camera).
  return np.eye(3) + k + k @ k / (1.0 + c)
