"""Training augmentation of aligned crops: shift, scale, rotation, horizontal flip, colour jitter.

Geometry is one affine map of the crop (project pixel convention) applied to the image, the skin
mask and the landmarks together; a flip mirrors x and re-labels the landmarks with
`landmarks.FLIP_PERMUTATION`, so point 36 is still the outer corner of the image-left eye. Areas
brought in from outside the crop are black in the image and 0 in the skin mask (so photometric
losses ignore them). Defaults are the baseline's recipe: shift +-10 px (of a 224 crop), scale
+-10 %, rotation +-10 deg, flip with probability 0.5.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from data_pipelines.alignment import warp_affine
from data_pipelines.landmarks import FLIP_PERMUTATION


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
  """Ranges (uniform in +-range) and probabilities; all zero = no augmentation."""
  shift_px: float = 10.0      # pixels of a 224 crop (scaled to the crop's size)
  scale: float = 0.1
  rotation_deg: float = 10.0
  flip_prob: float = 0.5
  brightness: float = 0.2     # multiply by 1 +- b
  contrast: float = 0.2       # blend with the mean grey by 1 +- c
  saturation: float = 0.2     # blend with the luma by 1 +- s

  @classmethod
  def from_config(cls, cfg) -> "AugmentOptions":
    """From a mapping/ConfigDict with these field names (missing fields keep the defaults);
    `enabled: False` turns everything off."""
    d = dict(cfg)
    if not d.pop("enabled", True):
      return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: float(v) for k, v in d.items() if k in names})

  @property
  def geometric(self) -> bool:
    return bool(self.shift_px or self.scale or self.rotation_deg or self.flip_prob)


def sample_geometry(rng: np.random.Generator, options: AugmentOptions, size: int
                    ) -> tuple[np.ndarray, bool]:
  """-> ([2, 3] affine crop -> augmented crop, flipped). Rotation/scale about the crop centre; the
  shift range is `options.shift_px` at 224 px, proportionally less on smaller crops."""
  angle = np.radians(rng.uniform(-1, 1) * options.rotation_deg)
  scale = 1.0 + rng.uniform(-1, 1) * options.scale
  shift = rng.uniform(-1, 1, size=2) * options.shift_px * size / 224.0
  flip = bool(rng.random() < options.flip_prob)
  c = size / 2.0
  cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
  a = np.array([[cos, -sin], [sin, cos]])
  if flip:
    a = a @ np.array([[-1.0, 0.0], [0.0, 1.0]])
  b = np.array([c, c]) + shift - a @ np.array([c, c])
  return np.concatenate([a, b[:, None]], axis=1), flip


def apply_geometry(image: np.ndarray, skin_mask: np.ndarray, landmarks: np.ndarray,
                   matrix: np.ndarray, flipped: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Warps image [S, S, 3] and skin_mask [S, S] (any dtype OpenCV warps) and maps landmarks [68, 2].

  `flipped` says that `matrix` mirrors x: the landmarks are then re-labelled by FLIP_PERMUTATION.
  """
  size = image.shape[:2]
  img = warp_affine(image, matrix, size)
  mask = warp_affine(skin_mask, matrix, size)
  lm = landmarks @ matrix[:, :2].T + matrix[:, 2]
  if flipped:
    lm = lm[FLIP_PERMUTATION]
  return img, mask, lm.astype(np.float32)


# Luma weights of ITU-R BT.601 (what OpenCV's RGB2GRAY uses), for saturation.
_LUMA = np.array([0.299, 0.587, 0.114])


def colour_jitter(image: np.ndarray, rng: np.random.Generator, options: AugmentOptions
                  ) -> np.ndarray:
  """uint8 RGB [S, S, 3] -> jittered uint8 copy: brightness (x * b), contrast (about the mean by c),
  saturation (about the luma by s), in that order, rounded and clipped to [0, 255].

  The three steps are linear, so they are applied as one 3x4 colour matrix in a single pass:
  out = c b (s I + (1 - s) 1 w^T) x + (1 - c) b mean(x), w the luma weights.
  """
  b = 1.0 + rng.uniform(-1, 1) * options.brightness
  c = 1.0 + rng.uniform(-1, 1) * options.contrast
  s = 1.0 + rng.uniform(-1, 1) * options.saturation
  if b == 1.0 and c == 1.0 and s == 1.0:
    return image
  mean = float(np.mean(cv2.mean(image)[:3]))
  a = c * b * (s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _LUMA))
  offset = (1 - c) * b * mean
  m = np.concatenate([a, np.full((3, 1), offset)], axis=1).astype(np.float32)
  return cv2.transform(image, m)
