"""Alignment to the network's crop, the way Deep3DFaceRecon does it (numbers, not code).

Five points (eye centres, nose tip, mouth corners; `landmarks.five_points`) are fitted by least squares
with a scale and a translation -- no rotation: the network predicts roll -- onto reference positions.
The reference positions are the embedded face model's mean-face landmarks projected with its default
camera into the crop, so an aligned photo is framed like a rendered mean face at the origin
(Deep3DFaceRecon's "rescale factor" 102 is the same thing for BFM: focal 1015 / distance 10).

`AlignTransform` maps original-image pixels to crop pixels (`crop = scale * image + translation`,
project pixel convention, x right, y down, pixel centres at +0.5) and back, so results predicted on
the crop can be drawn on the original photo.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from data_pipelines.landmarks import NUM_LANDMARKS, five_points

CROP_SIZE = 224


@dataclasses.dataclass(frozen=True)
class AlignTransform:
  """crop = scale * image + translation (pixels; scale dimensionless, translation [2] crop pixels).

  scale_y: a different vertical scale (Deep3DFaceRecon's crop resizes the photo to whole pixels
  in each direction: `deep3d_alignment`); None = `scale`. resample: how `warp_to_crop` cuts the
  crop: "linear" (OpenCV bilinear warp) or "pil_bicubic" (Deep3DFaceRecon's PIL bicubic resize
  of the photo and integer crop; needs whole-pixel translations).
  """
  scale: float
  translation: tuple[float, float]
  size: int = CROP_SIZE
  scale_y: float | None = None
  resample: str = "linear"

  @property
  def scales(self) -> np.ndarray:
    """[2] (horizontal, vertical) scale."""
    return np.array([self.scale, self.scale if self.scale_y is None else self.scale_y])

  def to_crop(self, points: np.ndarray) -> np.ndarray:
    """[..., 2] original-image pixels -> crop pixels."""
    return np.asarray(points, np.float64) * self.scales + np.asarray(self.translation)

  def to_image(self, points: np.ndarray) -> np.ndarray:
    """[..., 2] crop pixels -> original-image pixels."""
    return (np.asarray(points, np.float64) - np.asarray(self.translation)) / self.scales

  @property
  def matrix(self) -> np.ndarray:
    """[2, 3] affine, image -> crop (project pixel convention)."""
    (sx, sy), (tx, ty) = self.scales, self.translation
    return np.array([[sx, 0.0, tx], [0.0, sy, ty]])

  @property
  def inverse_matrix(self) -> np.ndarray:
    """[2, 3] affine, crop -> image."""
    (sx, sy), (tx, ty) = self.scales, self.translation
    return np.array([[1 / sx, 0.0, -tx / sx], [0.0, 1 / sy, -ty / sy]])

  def as_array(self) -> np.ndarray:
    """[3] float32 (scale, tx, ty), the form stored in datasets (isotropic transforms only)."""
    return np.array([self.scale, *self.translation], np.float32)

  @classmethod
  def from_array(cls, a, size: int = CROP_SIZE) -> "AlignTransform":
    a = np.asarray(a, np.float64).reshape(3)
    return cls(float(a[0]), (float(a[1]), float(a[2])), size)


def reference_five_points(face_model=None, size: int = CROP_SIZE) -> np.ndarray:
  """[5, 2] crop pixels: the model's mean-face 5 points projected with its default camera.

  `face_model` defaults to the embedded model; `size` is the crop side in pixels.
  """
  from msma_jax import camera as cam
  from msma_jax.face_model import load_face_model
  fm = face_model if face_model is not None else load_face_model("embedded")
  lm3d = np.asarray(fm.landmarks_3d(fm.mean_shape), np.float64)        # [68, 3], frontal, at origin
  c = cam.Camera.for_face_model(fm, size)
  depth = c.distance - lm3d[:, 2]
  pixels = np.stack([c.principal[0] + c.focal * lm3d[:, 0] / depth,
                     c.principal[1] - c.focal * lm3d[:, 1] / depth], -1)
  return five_points(pixels)


def fit_alignment(points: np.ndarray, reference: np.ndarray, size: int = CROP_SIZE) -> AlignTransform:
  """Least-squares scale s and translation t minimising sum |s * points + t - reference|^2.

  points, reference: [N, 2] (N >= 2, not all coincident) in image / crop pixels.
  """
  p = np.asarray(points, np.float64).reshape(-1, 2)
  r = np.asarray(reference, np.float64).reshape(-1, 2)
  if p.shape != r.shape or p.shape[0] < 2:
    raise ValueError(f"fit_alignment needs matching [N>=2, 2] arrays, got {p.shape} and {r.shape}")
  pc, rc = p - p.mean(0), r - r.mean(0)
  denom = float((pc ** 2).sum())
  if not np.isfinite(denom) or denom < 1e-9:
    raise ValueError("fit_alignment: the landmarks coincide (degenerate face)")
  s = float((pc * rc).sum() / denom)
  if s <= 0:
    raise ValueError("fit_alignment: landmarks are mirrored or scrambled relative to the reference")
  t = r.mean(0) - s * p.mean(0)
  return AlignTransform(s, (float(t[0]), float(t[1])), size)


def to_cv_matrix(matrix: np.ndarray) -> np.ndarray:
  """[2, 3] affine in the project convention (centres at +0.5) -> OpenCV's (centres at integers)."""
  m = np.asarray(matrix, np.float64)
  a, b = m[:, :2], m[:, 2]
  return np.concatenate([a, (b + a @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int | tuple[int, int], *,
                interpolation: int = cv2.INTER_LINEAR, border_value=0) -> np.ndarray:
  """Warps image [H, W(, C)] by the project-convention affine `matrix` (source -> output pixels)
  into an output of `size` (int or (H, W)); outside the source is `border_value`."""
  h, w = (size, size) if isinstance(size, int) else size
  return cv2.warpAffine(image, to_cv_matrix(matrix), (int(w), int(h)), flags=interpolation,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def warp_to_crop(image: np.ndarray, transform: AlignTransform, *,
                 interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
  """Cuts the aligned crop [size, size(, C)] out of `image` [H, W(, C)] (black outside the photo).

  Large downscales (scale < 0.5, e.g. faces of 1000+ pixels in big photos) first shrink only the
  needed region with area averaging, so the crop is not aliased; the geometry is the same.
  """
  if transform.resample == "pil_bicubic":
    return _pil_resize_crop(image, transform)
  s, (tx, ty) = transform.scale, transform.translation
  size = transform.size
  if s >= 0.5:
    return warp_affine(image, transform.matrix, size, interpolation=interpolation)
  h, w = image.shape[:2]
  margin = 2.0 / s
  x0 = int(max(0, np.floor((0 - tx) / s - margin)))
  y0 = int(max(0, np.floor((0 - ty) / s - margin)))
  x1 = int(min(w, np.ceil((size - tx) / s + margin)))
  y1 = int(min(h, np.ceil((size - ty) / s + margin)))
  if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the photo
    return np.zeros((size, size, *image.shape[2:]), image.dtype)
  roi = image[y0:y1, x0:x1]
  nw, nh = max(1, int(round(roi.shape[1] * s))), max(1, int(round(roi.shape[0] * s)))
  small = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
  fx, fy = nw / roi.shape[1], nh / roi.shape[0]
  # crop = s * (x_small / f + x0) + t
  matrix = np.array([[s / fx, 0.0, s * x0 + tx], [0.0, s / fy, s * y0 + ty]])
  return warp_affine(small, matrix, size, interpolation=interpolation)


def _pil_resize_crop(image: np.ndarray, transform: AlignTransform) -> np.ndarray:
  """Deep3DFaceRecon's crop: the photo [H, W(, C)] uint8 resized by PIL's bicubic filter to
  (w, h) = (scale · W, scale_y · H) whole pixels, then the size² window at (-tx, -ty) cut out,
  black outside the photo. Only the window's part of the photo is resampled, in PIL's two passes
  done apart (horizontal over all rows, then vertical; each with a `box`): the same filter taps and
  8-bit intermediate as resizing the whole photo, without building a huge image for small faces.
  (One resize with a two-sided box differs from the whole-photo resize by up to 20 levels in
  Pillow 13.)"""
  from PIL import Image
  big_h, big_w = image.shape[:2]
  (sx, sy), (tx, ty) = transform.scales, transform.translation
  w, h = int(round(sx * big_w)), int(round(sy * big_h))
  left, up, size = int(round(-tx)), int(round(-ty)), transform.size
  out = np.zeros((size, size, *image.shape[2:]), image.dtype)
  x0, y0, x1, y1 = max(left, 0), max(up, 0), min(left + size, w), min(up + size, h)
  if x1 <= x0 or y1 <= y0:
    return out
  bicubic = Image.Resampling.BICUBIC
  rows = Image.fromarray(image).resize(
      (x1 - x0, big_h), bicubic, box=(x0 * big_w / w, 0, min(x1 * big_w / w, big_w), big_h))
  part = rows.resize((x1 - x0, y1 - y0), bicubic,
                     box=(0, y0 * big_h / h, x1 - x0, min(y1 * big_h / h, big_h)))
  out[y0 - up:y1 - up, x0 - left:x1 - left] = np.asarray(part)
  return out


class Aligner:
  """Fits and applies the crop alignment for one face model and crop size."""

  def __init__(self, face_model=None, size: int = CROP_SIZE, reference: np.ndarray | None = None):
    self.size = int(size)
    self.reference = (np.asarray(reference, np.float64).reshape(5, 2) if reference is not None
                      else reference_five_points(face_model, self.size))   # [5, 2] crop pixels

  def fit(self, landmarks: np.ndarray, image_size: tuple[int, int] | None = None) -> AlignTransform:
    """[68, 2] or [5, 2] image landmarks -> the image-to-crop transform (image_size (H, W) is not
    needed by this alignment; `Deep3DAligner` uses it)."""
    lm = np.asarray(landmarks, np.float64)
    pts = five_points(lm) if lm.shape[0] == NUM_LANDMARKS else lm
    if pts.shape != (5, 2):
      raise ValueError(f"alignment needs [68, 2] or [5, 2] landmarks, got {lm.shape}")
    return fit_alignment(pts, self.reference, self.size)
