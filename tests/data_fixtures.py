"""Helpers shared by the data-pipeline tests: real photos, landmark files, small prepared datasets."""
from __future__ import annotations

import functools
import pathlib

import numpy as np
from PIL import Image


@functools.lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
  """scikit-image's astronaut photo (512x512 RGB, one frontal face)."""
  from skimage import data
  return np.ascontiguousarray(data.astronaut())


@functools.lru_cache(maxsize=1)
def astronaut_landmarks() -> np.ndarray:
  """dlib's 68 landmarks of the astronaut's face [68, 2] (computed once per test process)."""
  from data_pipelines.detection import FaceDetector
  det = FaceDetector()
  img = astronaut()
  return det.landmarks(img, det.detect(img)[0].box)


def similarity(rng: np.random.Generator, size=(512, 512), out=(480, 400)):
  """A random similarity transform [2, 3] (project convention) that keeps the face inside `out`."""
  angle = np.radians(rng.uniform(-20, 20))
  s = rng.uniform(0.7, 1.1)
  a = s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  centre_in = np.array([220.0, 120.0])  # the face
  centre_out = np.array([out[1] / 2, out[0] / 2]) + rng.uniform(-40, 40, 2)
  b = centre_out - a @ centre_in
  return np.concatenate([a, b[:, None]], 1)


def write_landmark_photos(folder: pathlib.Path, n: int, seed: int = 0) -> list[pathlib.Path]:
  """Writes n warped copies of the astronaut photo with `.pts` landmark files beside them."""
  from data_pipelines.alignment import warp_affine
  from data_pipelines.landmarks import write_pts
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  img, lm = astronaut(), astronaut_landmarks()
  paths = []
  for i in range(n):
    m = similarity(rng)
    warped = warp_affine(img, m, (480, 400))
    p = folder / f"face_{i:03d}.png"
    Image.fromarray(warped).save(p)
    write_pts(p.with_suffix(".pts"), lm @ m[:, :2].T + m[:, 2])
    paths.append(p)
  return paths
