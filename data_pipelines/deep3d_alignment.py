"""Deep3DFaceRecon's crop alignment (`--align deep3d`): the numbers of its `align_img`, not its code.

Deep3DFaceRecon frames a face by five image points (eye centres, nose tip, mouth corners; from 68
points as `landmarks.five_points` does) and the same five points of a standard 3D face, the file
`similarity_Lm3D_all.mat` of its BFM folder (68 points, key `lm`, reduced to five the same way):

1. Its frame: pixel indices with y up. A point (x, y) here (pixel centres at +0.5, y down) is
   u = x - 0.5, v = H - 1 - (y - 0.5) there (H, W: the photo's height and width).
2. POS, least squares over the 8 unknowns (r1, tx, r2, ty): u_i = r1 · P_i + tx, v_i = r2 · P_i + ty
   for the five points P_i; s_pos = (|r1| + |r2|) / 2.
3. s = 102 / s_pos (102: its rescale factor). The photo is resized (PIL bicubic) to whole pixels
   w = int(W · s), h = int(H · s), and the 224² window at
   left = int(w / 2 - 112 + (tx - W / 2) · s),  up = int(h / 2 - 112 + (H / 2 - ty) · s)
   is cut out (black outside the photo); int truncates toward zero, as NumPy's astype does.
4. So a photo point maps into the crop by crop_x = x · w / W - left, crop_y = y · h / H - up
   (pixel centres at +0.5 on both sides: PIL's resize maps pixel centres that way); landmarks
   predicted in the crop go back by the inverse. Deep3DFaceRecon's own crop-landmark formula
   ((x - tx + W/2) · s - (w/2 - 112)) drops the int() roundings and so is off from its crop by up
   to a pixel; the transform here is the crop's.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from data_pipelines.alignment import CROP_SIZE, AlignTransform
from data_pipelines.landmarks import NUM_LANDMARKS, five_points

LM3D_FILE = "similarity_Lm3D_all.mat"
RESCALE_FACTOR = 102.0       # Deep3DFaceRecon: focal 1015 / camera distance 10, rounded


class Deep3DAlignError(ValueError):
  """A standard-landmark file that is missing or unusable, or points that cannot be aligned."""


def load_standard_points(path: str | os.PathLike) -> np.ndarray:
  """`similarity_Lm3D_all.mat` (68 x 3 under `lm`; or a folder holding it) -> [5, 3] points."""
  import scipy.io
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / LM3D_FILE
  if not path.is_file():
    raise Deep3DAlignError(f"{path}: Deep3DFaceRecon's standard landmarks not found (--align "
                           f"deep3d reads {LM3D_FILE} from the BFM folder)")
  try:
    lm = np.asarray(scipy.io.loadmat(str(path))["lm"], np.float64)
  except KeyError:
    raise Deep3DAlignError(f"{path}: no 'lm' array (Deep3DFaceRecon's {LM3D_FILE} holds 68 3D "
                           "points under 'lm')") from None
  except Exception as e:
    raise Deep3DAlignError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: "
                           f"{e})") from e
  if lm.shape != (NUM_LANDMARKS, 3) or not np.all(np.isfinite(lm)):
    raise Deep3DAlignError(f"{path}: 'lm' must be 68 finite 3D points, got shape {lm.shape}")
  return five_points(lm)


def pos(points: np.ndarray, standard: np.ndarray) -> tuple[np.ndarray, float]:
  """Least-squares scaled orthographic projection: points [N, 2] (Deep3D frame) ~ r · P + t for
  standard [N, 3]. Returns (t [2], s_pos) with s_pos the mean norm of the two projection rows."""
  p, x = np.asarray(points, np.float64), np.asarray(standard, np.float64)
  n = len(p)
  a = np.zeros((2 * n, 8))
  a[0::2, 0:3], a[0::2, 3] = x, 1.0
  a[1::2, 4:7], a[1::2, 7] = x, 1.0
  k = np.linalg.lstsq(a, p.reshape(-1), rcond=None)[0]
  s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2.0
  return np.array([k[3], k[7]]), float(s)


@dataclasses.dataclass(frozen=True)
class Deep3DCrop:
  """Deep3DFaceRecon's crop parameters: scale s, resized photo (w, h), window corner (left, up)."""
  s: float
  t: tuple[float, float]
  w: int
  h: int
  left: int
  up: int

  def transform(self, image_size: tuple[int, int], size: int = CROP_SIZE) -> AlignTransform:
    big_h, big_w = image_size
    return AlignTransform(self.w / big_w, (-float(self.left), -float(self.up)), size,
                          scale_y=self.h / big_h, resample="pil_bicubic")


def deep3d_crop(points5: np.ndarray, image_size: tuple[int, int], standard: np.ndarray,
                size: int = CROP_SIZE, rescale_factor: float = RESCALE_FACTOR) -> Deep3DCrop:
  """Five points [5, 2] (project convention) of a photo of (H, W) pixels -> the crop (steps 1-3)."""
  big_h, big_w = image_size
  p = np.asarray(points5, np.float64)
  frame = np.stack([p[:, 0] - 0.5, big_h - 1 - (p[:, 1] - 0.5)], -1)
  t, s_pos = pos(frame, standard)
  if not np.isfinite(s_pos) or s_pos < 1e-9:
    raise Deep3DAlignError("the alignment points coincide (degenerate face)")
  s = rescale_factor / s_pos
  w, h = int(big_w * s), int(big_h * s)
  if w < 1 or h < 1:
    raise Deep3DAlignError(f"the face is too large for the photo ({w}x{h} px after resizing)")
  half = size / 2.0
  left = int(w / 2 - half + (t[0] - big_w / 2) * s)
  up = int(h / 2 - half + (big_h / 2 - t[1]) * s)
  return Deep3DCrop(s, (float(t[0]), float(t[1])), w, h, left, up)


class Deep3DAligner:
  """`Aligner`'s interface with Deep3DFaceRecon's alignment; `standard`: [5, 3] points or the
  path of `similarity_Lm3D_all.mat` / its folder."""

  def __init__(self, standard, size: int = CROP_SIZE):
    if size != CROP_SIZE:
      raise Deep3DAlignError(f"Deep3DFaceRecon's alignment makes {CROP_SIZE}-px crops, not {size}")
    self.size = int(size)
    self.standard = (np.asarray(standard, np.float64).reshape(5, 3)
                     if isinstance(standard, np.ndarray) else load_standard_points(standard))

  def fit(self, landmarks: np.ndarray, image_size: tuple[int, int] | None = None) -> AlignTransform:
    """[68, 2] or [5, 2] photo landmarks of a photo of image_size (H, W) -> photo-to-crop."""
    if image_size is None:
      raise ValueError("Deep3DFaceRecon's alignment needs the photo's size")
    lm = np.asarray(landmarks, np.float64)
    pts = five_points(lm) if lm.shape[0] == NUM_LANDMARKS else lm
    if pts.shape != (5, 2):
      raise ValueError(f"alignment needs [68, 2] or [5, 2] landmarks, got {lm.shape}")
    return deep3d_crop(pts, image_size, self.standard, self.size).transform(image_size, self.size)
