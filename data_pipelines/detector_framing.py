"""How a face detector frames a face, compared with its true landmarks: measured, then sampled.

At test time a photo is cut out by the 5-point alignment of *dlib's* 68 points; a synthetic face is
cut out by its *true* landmark vertices. The two crops differ by a scale r and a shift d (dlib's
eye centres, nose tip and mouth corners sit elsewhere on the face than the model's, and scatter),
so a network trained on true framing sees photos shifted and scaled. This module describes that
difference as a distribution and draws from it, so synthetic crops can be framed as a detector
would frame them (`SyntheticOptions.framing = "detector"`).

The relative framing of one face: with T_true and T_det the two image -> crop alignments,
crop_det = r (crop_true - c) + c + d, c the crop centre. Stored as v = (log r, d_x / S, d_y / S) for
an S-pixel crop, modelled as v = W^T phi(yaw) + e, phi = (1, sin yaw, |sin yaw|) (the shift across
the face is odd in yaw, scale and vertical shift are even; flips keep that true), e ~ N(0, cov).

`scripts/calibrate_framing.py` measures it on photo-like renders (`data_pipelines.photo_like`) and
writes the fit into `framing_calibration.json` beside this module, one entry per face model.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from data_pipelines.alignment import AlignTransform

CALIBRATION_FILE = pathlib.Path(__file__).with_name("framing_calibration.json")


def relative_framing(true: AlignTransform, detected: AlignTransform) -> np.ndarray:
  """[3] (log r, d_x / S, d_y / S) of the detector's crop relative to the true one (same size S)."""
  size = float(true.size)
  r = detected.scale / true.scale
  c = size / 2.0
  d = np.asarray(detected.translation) - r * np.asarray(true.translation) - (1.0 - r) * c
  return np.array([np.log(r), d[0] / size, d[1] / size])


def yaw_features(yaw: np.ndarray) -> np.ndarray:
  """[n] yaw (radians) -> [n, 3] phi = (1, sin yaw, |sin yaw|)."""
  s = np.sin(np.asarray(yaw, np.float64).reshape(-1))
  return np.stack([np.ones_like(s), s, np.abs(s)], -1)


@dataclasses.dataclass(frozen=True)
class FramingNoise:
  """v = weights^T phi(yaw) + N(0, cov); weights [3 features, 3 components], cov [3, 3]."""
  weights: np.ndarray
  cov: np.ndarray

  @classmethod
  def fit(cls, values: np.ndarray, yaw: np.ndarray, outlier_mads: float = 4.0) -> "FramingNoise":
    """Least squares of values [n, 3] on phi(yaw [n]), refitted without outliers (any component's
    residual beyond `outlier_mads` scaled MADs: the detector's landmark failures)."""
    v = np.asarray(values, np.float64)
    x = yaw_features(yaw)
    keep = np.ones(len(v), bool)
    for _ in range(2):
      w = np.linalg.lstsq(x[keep], v[keep], rcond=None)[0]
      res = v - x @ w
      mad = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep], 0)), 0)
      keep = np.all(np.abs(res) <= outlier_mads * np.maximum(mad, 1e-9), 1)
    w = np.linalg.lstsq(x[keep], v[keep], rcond=None)[0]
    res = (v - x @ w)[keep]
    return cls(w, np.cov(res.T))

  def sample(self, rng: np.random.Generator, yaw: np.ndarray, size: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Draws for faces of yaw [n] (radians) -> (scale r [n], shift d [n, 2] pixels of a `size` crop):
    where the detector's crop puts the true framing (see `synthetic.frame_faces`)."""
    mean = yaw_features(yaw) @ self.weights
    e = rng.multivariate_normal(np.zeros(3), self.cov, size=len(mean))
    v = mean + e
    return np.exp(v[:, 0]), v[:, 1:] * float(size)

  def to_dict(self) -> dict:
    return {"weights": np.round(self.weights, 6).tolist(), "cov": np.round(self.cov, 8).tolist()}

  @classmethod
  def from_dict(cls, d: dict) -> "FramingNoise":
    w, c = np.asarray(d["weights"], np.float64), np.asarray(d["cov"], np.float64)
    if w.shape != (3, 3) or c.shape != (3, 3):
      raise ValueError(f"framing calibration: weights {w.shape} and cov {c.shape}, expected (3, 3)")
    return cls(w, c)


def load_calibration(face_model_name: str, path: str | pathlib.Path = CALIBRATION_FILE
                     ) -> FramingNoise:
  """The measured framing noise of a face model (its name: 'embedded', 'embedded-ict', ...)."""
  entries = json.loads(pathlib.Path(path).read_text())
  if face_model_name not in entries:
    raise ValueError(f"no detector-framing calibration for face model {face_model_name!r} in "
                     f"{path} (has {sorted(entries)}); run scripts/calibrate_framing.py "
                     f"--face-model {face_model_name}, or use synthetic.framing='true'")
  return FramingNoise.from_dict(entries[face_model_name])
