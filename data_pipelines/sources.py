"""Where photos come from: a folder tree of images, or the raw 300W-LP / AFLW2000-3D layouts.

Every source yields `SourceItem`s: an image path, a stable key (its path relative to the root, POSIX
separators), and optional annotations (68 landmarks [F, 68, 2] in project pixel convention, pose in
degrees (yaw, pitch, roll), 3DMM parameters) that take precedence over detection.

Raw layouts (for users who have the datasets; facts of their published formats):

* **300W-LP**: sub-folders (AFW, HELEN, IBUG, LFPW and their `_Flip` versions) of `name.jpg` +
  `name.mat`; the `.mat` holds `pt2d` [2, 68] (x; y image pixels), `Pose_Para` [1, 7] (pitch, yaw,
  roll in radians, tx, ty, tz, scale), `Shape_Para` [199, 1], `Exp_Para` [29, 1], and also
  `Illum_Para`, `Color_Para`, `Tex_Para`, `roi`. A `landmarks/` folder (with `*_pts.mat`) is ignored.
* **AFLW2000-3D**: one folder of `imageNNNNN.jpg` + `.mat` with `pt3d_68` [3, 68] (x, y image pixels,
  z), `pt2d` [2, 21] (AFLW's 21 points, -1 where missing), and the same pose/3DMM parameters.

Both store MATLAB 1-based pixel coordinates; 0.5 is subtracted to get the project convention.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator

import numpy as np

from data_pipelines.images import IMAGE_SUFFIXES


@dataclasses.dataclass
class SourceItem:
  """One input photo. landmarks: [F, 68, 2] or None; pose_deg: [3] (yaw, pitch, roll) or None;
  params: extra numeric annotations (e.g. 3DMM parameters) or {}; error: why the annotation could
  not be read (the item is then skipped and counted, the rest of the source goes on)."""
  path: pathlib.Path
  key: str
  landmarks: np.ndarray | None = None
  pose_deg: np.ndarray | None = None
  params: dict = dataclasses.field(default_factory=dict)
  error: str | None = None


class SourceError(ValueError):
  """A source folder or annotation file that cannot be used (the message names it)."""


def _check_dir(root) -> pathlib.Path:
  root = pathlib.Path(root)
  if not root.is_dir():
    raise SourceError(f"{root}: not a folder")
  return root


def list_images(root: str | os.PathLike) -> list[pathlib.Path]:
  """All images under `root` (recursive; .jpg .jpeg .png .bmp .webp, any case), sorted by path.

  Hidden files and folders (names starting with '.') are skipped.
  """
  root = _check_dir(root)
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for f in filenames:
      if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES:
        out.append(pathlib.Path(dirpath) / f)
  return sorted(out)


def image_folder(root: str | os.PathLike) -> Iterator[SourceItem]:
  """A folder tree of photos (landmark files beside them are found later by the preprocessor)."""
  root = _check_dir(root)
  for p in list_images(root):
    yield SourceItem(path=p, key=p.relative_to(root).as_posix())


def _loadmat(path: pathlib.Path) -> dict:
  import scipy.io
  try:
    return scipy.io.loadmat(str(path))
  except Exception as e:
    raise SourceError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from e


def _pose_deg(m: dict, path: pathlib.Path) -> np.ndarray:
  pose = np.asarray(m["Pose_Para"], np.float64).reshape(-1)
  if pose.size < 3:
    raise SourceError(f"{path}: 'Pose_Para' has {pose.size} values, expected 7")
  pitch, yaw, roll = np.degrees(pose[:3])
  return np.array([yaw, pitch, roll], np.float32)


_PARAM_KEYS = ("Pose_Para", "Shape_Para", "Exp_Para", "Illum_Para", "Color_Para", "Tex_Para")


def read_3ddfa_mat(path: str | os.PathLike, landmark_key: str) -> dict:
  """Reads one 300W-LP / AFLW2000-3D annotation -> {'landmarks' [68, 2], 'pose_deg' [3], params}.

  landmark_key: 'pt2d' (300W-LP) or 'pt3d_68' (AFLW2000-3D). Raises SourceError naming the file.
  """
  path = pathlib.Path(path)
  m = _loadmat(path)
  missing = [k for k in (landmark_key, "Pose_Para") if k not in m]
  if missing:
    raise SourceError(f"{path}: lacks keys {missing} (a {landmark_key!r} annotation file)")
  pts = np.asarray(m[landmark_key], np.float64)
  if pts.ndim != 2 or pts.shape[1] != 68 or pts.shape[0] < 2:
    raise SourceError(f"{path}: '{landmark_key}' has shape {pts.shape}, expected [2 or 3, 68]")
  lm = pts[:2].T - 0.5
  if not np.all(np.isfinite(lm)):
    raise SourceError(f"{path}: '{landmark_key}' contains NaN or Inf")
  params = {k: np.asarray(m[k], np.float32).reshape(-1) for k in _PARAM_KEYS if k in m}
  return {"landmarks": lm.astype(np.float32), "pose_deg": _pose_deg(m, path), "params": params}


def _paired_mat(root: pathlib.Path, landmark_key: str) -> Iterator[SourceItem]:
  for img in list_images(root):
    if "landmarks" in img.relative_to(root).parts[:-1]:
      continue
    mat = img.with_suffix(".mat")
    if not mat.is_file():
      continue   # an image without annotation is not part of these datasets
    key = img.relative_to(root).as_posix()
    try:
      a = read_3ddfa_mat(mat, landmark_key)
    except SourceError as e:
      yield SourceItem(path=img, key=key, error=str(e))
      continue
    yield SourceItem(path=img, key=key, landmarks=a["landmarks"][None], pose_deg=a["pose_deg"],
                     params=a["params"])


def w300_lp(root: str | os.PathLike) -> Iterator[SourceItem]:
  """The raw 300W-LP layout (recursive `.jpg` + `.mat` with `pt2d`)."""
  return _paired_mat(_check_dir(root), "pt2d")


def aflw2000_3d(root: str | os.PathLike) -> Iterator[SourceItem]:
  """The raw AFLW2000-3D layout (`.jpg` + `.mat` with `pt3d_68`)."""
  return _paired_mat(_check_dir(root), "pt3d_68")


SOURCE_LAYOUTS = {"folder": image_folder, "300w_lp": w300_lp, "aflw2000_3d": aflw2000_3d}


def open_source(root: str | os.PathLike, layout: str = "folder") -> Iterator[SourceItem]:
  """Items of `root` in one of SOURCE_LAYOUTS ('folder', '300w_lp', 'aflw2000_3d')."""
  if layout not in SOURCE_LAYOUTS:
    raise SourceError(f"unknown source layout {layout!r}; choose one of {list(SOURCE_LAYOUTS)}")
  return SOURCE_LAYOUTS[layout](root)
