"""A contact sheet of reconstructions: one row per face.

Columns: the photo around the face, the render over it, the landmarks (green: the detector's or the
landmark file's points the face was aligned with; red: the reconstruction's projected landmark
vertices), and the reconstruction turned to three yaws. Written by `msma-jax reconstruct --sheet`.
"""
from __future__ import annotations

import os
import pathlib
from typing import Sequence

import cv2
import numpy as np

from msma_jax.inference.result import FaceResult
from msma_jax.inference.views import draw_points

YAWS = (-50.0, 0.0, 50.0)


def _face_region(face: FaceResult, margin: float = 0.35) -> tuple[int, int, int]:
  """(x0, y0, side) of a square around the input landmarks, in photo pixels."""
  lm = face.input_landmarks
  lo, hi = lm.min(0), lm.max(0)
  side = float(max(hi - lo)) * (1 + 2 * margin)
  cx, cy = (lo + hi) / 2
  cy -= 0.1 * side                                   # include the forehead
  return int(round(cx - side / 2)), int(round(cy - side / 2)), max(8, int(round(side)))


def _cut(image: np.ndarray, x0: int, y0: int, side: int, tile: int) -> np.ndarray:
  h, w = image.shape[:2]
  pad = np.zeros((side, side, 3), np.uint8)
  xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
  if xb > xa and yb > ya:
    pad[ya - y0:yb - y0, xa - x0:xb - x0] = image[ya:yb, xa:xb]
  return cv2.resize(pad, (tile, tile), interpolation=cv2.INTER_AREA if side > tile
                    else cv2.INTER_LINEAR)


def face_row(face: FaceResult, tile: int = 224) -> np.ndarray:
  """uint8 RGB [tile, 6 * tile, 3]: photo, overlay, landmarks, three views."""
  x0, y0, side = _face_region(face)
  photo = face.photo
  overlay = face.overlay()
  k = tile / side
  dots = _cut(photo, x0, y0, side, tile)
  shift = np.array([x0, y0], np.float64)
  dots = draw_points(dots, (face.input_landmarks - shift) * k, (40, 220, 40), 2.0)
  dots = draw_points(dots, (face.landmarks - shift) * k, (230, 40, 40), 2.0)
  views = face.render_views(YAWS, size=tile)
  views = np.round(np.clip(views, 0, 1) * 255).astype(np.uint8)
  return np.concatenate([_cut(photo, x0, y0, side, tile), _cut(overlay, x0, y0, side, tile), dots,
                         *views], axis=1)


def write_sheet(faces: Sequence[FaceResult], path: str | os.PathLike, tile: int = 224,
                gap: int = 4) -> pathlib.Path:
  """Writes the contact sheet of `faces` (one row each) as a PNG; returns its path."""
  if not faces:
    raise ValueError("write_sheet: no faces to draw")
  rows = [face_row(f, tile) for f in faces]
  width = rows[0].shape[1]
  parts = []
  for r in rows:
    parts += [r, np.full((gap, width, 3), 255, np.uint8)]
  sheet = np.concatenate(parts[:-1], axis=0)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
    raise OSError(f"{path}: could not write the sheet")
  return path
