"""The 68-point iBUG landmark scheme: flip permutation, the 5 alignment points, landmark files.

All landmarks here are `[..., 68, 2]` float pixel coordinates in the project convention (x right,
y down, the centre of pixel (i, j) at (i + 0.5, j + 0.5)), iBUG order, 0-based indices.

Landmark files beside an image (`photo.jpg` -> `photo.pts` or `photo.txt`, also looked up in a
`detections/` folder beside the image as Deep3DFaceRecon lays them out) take precedence over detection:

* `.pts` (iBUG / 300W): `version: 1`, `n_points: N`, `{`, N lines `x y`, `}`. Coordinates are 1-based
  as in MATLAB (the centre of the top-left pixel is (1, 1)), so 0.5 is subtracted.
* `.txt`: N lines `x y` (spaces, tabs or commas), 0-based pixel indices as OpenCV/dlib/Deep3DFaceRecon
  write them (the centre of the top-left pixel is (0, 0)), so 0.5 is added.

N must be 68 (one face), a multiple of 68 (several faces, in order), or 5 (one face given by the 5
alignment points of `five_points`, for which the 68 points are then predicted inside the aligned box).
`landmark_problem` says what is wrong with a face's points for a given photo (far outside it,
coincident or collinear alignment points), so such files are rejected instead of giving a face
collapsed to a dot or framed off the photo.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

NUM_LANDMARKS = 68


def _flip_permutation() -> np.ndarray:
  pairs = [(i, 16 - i) for i in range(8)]                                   # jaw
  pairs += [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]               # eyebrows
  pairs += [(31, 35), (32, 34)]                                             # nostrils
  pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]     # eyes
  pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]               # outer lips
  pairs += [(60, 64), (61, 63), (65, 67)]                                   # inner lips
  perm = np.arange(NUM_LANDMARKS)
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return perm


# FLIP_PERMUTATION[i] = the landmark that lands on point i's role after a horizontal mirror:
# flipped[i] = mirror(landmarks[FLIP_PERMUTATION[i]]). Self-mapped: 8 (chin), 27-30 (nose ridge),
# 33 (nose base), 51, 57, 62, 66 (lip middles).
FLIP_PERMUTATION = _flip_permutation()

# Deep3DFaceRecon's 5 alignment points from the 68: [eye centre (image left), eye centre (image
# right), nose tip, mouth corner (image left), mouth corner (image right)]; an eye centre is the mean
# of its two corners.
FIVE_POINT_GROUPS = ((36, 39), (42, 45), (30,), (48,), (54,))


def five_points(landmarks: np.ndarray) -> np.ndarray:
  """[..., 68, 2] -> [..., 5, 2] alignment points (see FIVE_POINT_GROUPS)."""
  lm = np.asarray(landmarks)
  if lm.shape[-2] != NUM_LANDMARKS:
    raise ValueError(f"five_points expects [..., 68, 2] landmarks, got {lm.shape}")
  return np.stack([lm[..., list(g), :].mean(axis=-2) for g in FIVE_POINT_GROUPS], axis=-2)


def flip_landmarks(landmarks: np.ndarray, width: float) -> np.ndarray:
  """Mirrors [..., 68, 2] landmarks of an image `width` pixels wide: x -> width - x, then permutes."""
  lm = np.asarray(landmarks)
  out = lm[..., FLIP_PERMUTATION, :].copy()
  out[..., 0] = width - out[..., 0]
  return out


# Points may leave the photo a little (a face cut by the frame), by at most this fraction of its longer
# side; farther, the file belongs to another (larger) picture or another coordinate convention.
OUTSIDE_MARGIN = 0.25
# The 5 alignment points must span at least this many pixels, no two of them closer than this
# fraction of that span, and not lie on a line (the smaller singular value of the centred points at
# least this fraction of the larger). A real face passes all three even near 90 degrees of yaw
# (eye-to-mouth distance keeps the span); 5 identical or 2 coincident points do not.
MIN_SPAN_PX = 4.0
MIN_SEPARATION = 0.02
MIN_FLATNESS = 0.05


def landmark_problem(points: np.ndarray, image_hw: tuple[int, int]) -> str | None:
  """What makes one face's [68, 2] or [5, 2] points (project pixels) unusable in a photo of
  `image_hw` = (H, W) pixels, in a few words; None when they can be aligned."""
  p = np.asarray(points, np.float64).reshape(-1, 2)
  h, w = image_hw
  margin = OUTSIDE_MARGIN * max(h, w)
  lo, hi = p.min(0), p.max(0)
  if lo[0] < -margin or lo[1] < -margin or hi[0] > w + margin or hi[1] > h + margin:
    return (f"points lie outside the {w}x{h} image (x {lo[0]:.0f} to {hi[0]:.0f}, "
            f"y {lo[1]:.0f} to {hi[1]:.0f})")
  five = p if len(p) == 5 else five_points(p)
  gaps = np.linalg.norm(five[:, None] - five[None], axis=-1)[np.triu_indices(5, 1)]
  span = float(gaps.max())
  if span < MIN_SPAN_PX:
    return f"the alignment points coincide (span {span:.1f} px; degenerate face)"
  if float(gaps.min()) < MIN_SEPARATION * span:
    return "two alignment points coincide (eyes, nose tip, mouth corners must be distinct)"
  sv = np.linalg.svd(five - five.mean(0), compute_uv=False)
  if sv[1] < MIN_FLATNESS * sv[0]:
    return "the alignment points lie on a line (degenerate face)"
  return None


class LandmarkFileError(ValueError):
  """A landmark file that cannot be parsed or has the wrong number of points (names the file)."""


def find_landmark_file(image_path: str | os.PathLike) -> pathlib.Path | None:
  """The landmark file for `image_path` (.pts before .txt; beside it, then in `detections/`)."""
  p = pathlib.Path(image_path)
  for folder in (p.parent, p.parent / "detections"):
    for suffix in (".pts", ".txt"):
      candidate = folder / (p.stem + suffix)
      if candidate.is_file():
        return candidate
  return None


def _parse_numbers(lines: list[str], path: pathlib.Path) -> np.ndarray:
  rows = []
  for n, line in enumerate(lines, 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    parts = line.replace(",", " ").split()
    try:
      values = [float(v) for v in parts]
    except ValueError:
      raise LandmarkFileError(f"{path}: line {n} is not 'x y' numbers: {line[:60]!r}") from None
    if len(values) < 2:
      raise LandmarkFileError(f"{path}: line {n} has {len(values)} number(s), expected 'x y'")
    rows.append(values[:2])
  a = np.asarray(rows, np.float64).reshape(-1, 2)
  if not np.all(np.isfinite(a)):
    raise LandmarkFileError(f"{path}: contains NaN or Inf coordinates")
  return a


def read_landmark_file(path: str | os.PathLike) -> np.ndarray:
  """Reads a `.pts` / `.txt` file -> [F, 68, 2] (F faces) or [1, 5, 2], project pixel convention.

  Raises LandmarkFileError naming the file on a parse error or a point count other than 5 or k*68.
  """
  path = pathlib.Path(path)
  try:
    text = path.read_text(errors="strict")
  except (OSError, UnicodeDecodeError) as e:
    raise LandmarkFileError(f"{path}: cannot read landmark file ({e})") from e
  lines = text.splitlines()
  declared = None
  if path.suffix.lower() == ".pts":
    try:
      start = next(i for i, l in enumerate(lines) if l.strip() == "{")
      end = next(i for i, l in enumerate(lines) if l.strip() == "}")
    except StopIteration:
      raise LandmarkFileError(f"{path}: not an iBUG .pts file (no '{{' ... '}}' block)") from None
    for line in lines[:start]:
      if line.strip().lower().startswith("n_points"):
        try:
          declared = int(line.split(":", 1)[1])
        except (IndexError, ValueError):
          raise LandmarkFileError(f"{path}: unreadable header line {line.strip()!r}") from None
    points = _parse_numbers(lines[start + 1:end], path) - 0.5
  else:
    points = _parse_numbers(lines, path) + 0.5
  n = points.shape[0]
  if declared is not None and declared != n:
    raise LandmarkFileError(f"{path}: header says n_points: {declared} but the file lists {n}")
  if n == 5:
    return points.reshape(1, 5, 2)
  if n == 0 or n % NUM_LANDMARKS:
    raise LandmarkFileError(f"{path}: has {n} points, expected 68 per face (or 5 alignment points)")
  return points.reshape(-1, NUM_LANDMARKS, 2)


def write_pts(path: str | os.PathLike, landmarks: np.ndarray) -> pathlib.Path:
  """Writes [68, 2] (or [N, 2]) project-convention landmarks as an iBUG `.pts` file (1-based)."""
  path = pathlib.Path(path)
  lm = np.asarray(landmarks, np.float64).reshape(-1, 2) + 0.5
  body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in lm)
  path.write_text(f"version: 1\nn_points: {len(lm)}\n{{\n{body}\n}}\n")
  return path
