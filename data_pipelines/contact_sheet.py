"""A contact sheet of a prepared dataset: aligned crops with their landmarks and skin masks.

Each tile shows a crop with its 68 landmarks (jaw, brows, nose, eyes, lips in different colours) and,
to its right, the skin mask (white = P(skin) 1, black = 0), so a user can check the alignment and the
masks by eye.
"""
from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

from data_pipelines.images import decode_crop

_GROUPS = [(range(0, 17), (255, 200, 0)), (range(17, 27), (255, 120, 0)),
           (range(27, 36), (0, 220, 255)), (range(36, 48), (0, 255, 0)),
           (range(48, 68), (255, 60, 160))]


def draw_tile(image: np.ndarray, landmarks: np.ndarray, skin_mask: np.ndarray,
              panel: int = 160) -> np.ndarray:
  """uint8 RGB crop [S, S, 3], landmarks [68, 2] (crop pixels), uint8 mask [S, S] ->
  uint8 [panel, 2 * panel, 3] (crop + landmarks | skin mask)."""
  s = image.shape[0]
  f = panel / s
  crop = cv2.resize(image, (panel, panel), interpolation=cv2.INTER_AREA)
  for idx, colour in _GROUPS:
    for x, y in np.asarray(landmarks)[list(idx)] * f - 0.5:
      cv2.circle(crop, (int(round(x * 16)), int(round(y * 16))), 24, colour, -1, cv2.LINE_AA, 4)
  m = cv2.resize(np.asarray(skin_mask, np.uint8), (panel, panel), interpolation=cv2.INTER_AREA)
  return np.concatenate([crop, np.repeat(m[..., None], 3, axis=-1)], axis=1)


def contact_sheet(source, count: int = 16, columns: int = 4, panel: int = 160,
                  indices=None) -> np.ndarray:
  """uint8 RGB sheet of the first `count` records (or `indices`) of a prepared dataset source."""
  n = len(source)
  idx = list(indices) if indices is not None else list(range(min(count, n)))
  if not idx:
    raise ValueError("contact sheet: the dataset has no records")
  tiles = []
  for i in idx:
    r = source[i]
    mask = r["skin_mask"]
    mask = decode_crop(mask, 1) if isinstance(mask, bytes) else np.asarray(mask, np.uint8)
    tiles.append(draw_tile(decode_crop(r["image"], 3), r["landmarks"], mask, panel))
  columns = min(columns, len(tiles))
  rows = -(-len(tiles) // columns)
  gap = 4
  th, tw = tiles[0].shape[:2]
  sheet = np.full((rows * (th + gap) + gap, columns * (tw + gap) + gap, 3), 255, np.uint8)
  for k, t in enumerate(tiles):
    r, c = divmod(k, columns)
    y, x = gap + r * (th + gap), gap + c * (tw + gap)
    sheet[y:y + th, x:x + tw] = t
  return sheet


def write_contact_sheet(source, path: str | os.PathLike, **kwargs) -> pathlib.Path:
  """Writes `contact_sheet(source, **kwargs)` as a PNG."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  sheet = contact_sheet(source, **kwargs)
  if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
    raise ValueError(f"{path}: could not write the contact sheet (is the suffix .png?)")
  return path
