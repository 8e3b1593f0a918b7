"""Conversion of the raw Basel Face Model 2009 into Deep3DFaceRecon's front-face model.

Inputs (all in one folder, the layout Deep3DFaceRecon's `BFM/` folder uses):

* `01_MorphableModel.mat`  the licensed BFM 2009 (shapeMU/PC/EV, texMU/PC/EV; 53,490 vertices)
* `Exp_Pca.bin`            Guo et al.'s expression basis (int32 dim, float32 mean, float32 basis)
* `std_exp.txt`            standard deviations of that basis
* `BFM_front_idx.mat`      `idx`: front-face vertices among the expression model's vertices (1-based)
* `BFM_exp_idx.mat`        `trimIndex`: expression-model vertices among BFM's vertices (1-based)
* `facemodel_info.mat`     `tri`, `keypoints`, `frontmask2_idx`, `skinmask`, `point_buf`, `tri_mask2`

The recipe is Deep3DFaceRecon's: bases scaled by their standard deviations, shapes divided by 1e5
(micrometres -> 0.1 m units), the first 80 identity / 64 expression / 80 texture components, and the
vertices cropped to the front face.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from msma_jax.face_model.io import FaceModelError, _loadmat, bfm_front_arrays_to_model, save_npz

RAW_FILES = ("01_MorphableModel.mat", "Exp_Pca.bin", "std_exp.txt", "BFM_front_idx.mat",
             "BFM_exp_idx.mat", "facemodel_info.mat")
N_ID, N_EXP, N_TEX = 80, 64, 80


def read_exp_pca_bin(path: pathlib.Path) -> np.ndarray:
  """Reads `Exp_Pca.bin` -> basis [3N, K] (the stored mean is not used by the recipe)."""
  raw = path.read_bytes()
  if len(raw) < 4:
    raise FaceModelError(f"{path}: too short to be an Exp_Pca.bin file")
  k = int(np.frombuffer(raw[:4], np.int32)[0])
  n_floats = (len(raw) - 4) // 4
  if k <= 0 or (len(raw) - 4) % 4 or n_floats % (3 * (k + 1)):
    raise FaceModelError(f"{path}: size {len(raw)} bytes does not fit a basis of {k} components")
  n = n_floats // (3 * (k + 1))
  data = np.frombuffer(raw[4:], np.float32)
  return data[3 * n:].reshape(k, 3 * n).T


def read_index_file(path: pathlib.Path, key: str, size: int) -> np.ndarray:
  """1-based MATLAB indices under `key` of a .mat file -> 0-based int64 [N], each in [0, size).

  Raises FaceModelError naming the file and key when the key is missing or an index is not an
  integer in [1, size] (an index file of another BFM release, or a damaged one).
  """
  data = _loadmat(path)
  if key not in data:
    keys = sorted(k for k in data if not k.startswith("__"))
    raise FaceModelError(f"{path}: lacks the key {key!r} (has: {', '.join(keys) or 'nothing'})")
  a = np.asarray(data[key], np.float64).reshape(-1)
  if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
    raise FaceModelError(f"{path}: {key!r} must hold integer (1-based) vertex indices")
  if a.min() < 1 or a.max() > size:
    raise FaceModelError(f"{path}: {key!r} holds indices {int(a.min())} to {int(a.max())}, outside "
                         f"1 to {size} (the vertices it indexes)")
  return a.astype(np.int64) - 1


def _read_std(path: pathlib.Path, k: int) -> np.ndarray:
  """`std_exp.txt` -> [>= k] finite standard deviations (FaceModelError naming the file)."""
  try:
    ev = np.loadtxt(path, ndmin=1).reshape(-1)
  except ValueError as e:
    raise FaceModelError(f"{path}: not a list of numbers ({str(e).splitlines()[0]})") from None
  if ev.size < k or not np.all(np.isfinite(ev)):
    raise FaceModelError(f"{path}: needs {k} finite standard deviations, has {ev.size}")
  return ev


def _check_basis(path: pathlib.Path, mean, pc, ev, names: tuple[str, str, str], k: int) -> None:
  """mean [3N, 1], pc [3N, >=k], ev [>=k] of one BFM basis; FaceModelError naming the key."""
  m, b, e = (np.asarray(x) for x in (mean, pc, ev))
  if m.size % 3 or b.ndim != 2 or b.shape[0] != m.size or b.shape[1] < k or e.size < k:
    raise FaceModelError(f"{path}: {names[0]} {m.shape}, {names[1]} {b.shape}, {names[2]} "
                         f"{e.shape} do not fit a [3N] mean with [3N, >= {k}] components")


def convert_bfm2009_arrays(bfm_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """Returns a dict with Deep3DFaceRecon's `BFM_model_front.mat` keys."""
  bfm_dir = pathlib.Path(bfm_dir)
  missing = [f for f in RAW_FILES if not (bfm_dir / f).exists()]
  if missing:
    raise FaceModelError(f"{bfm_dir}: missing {missing} (see `msma-jax convert-bfm --help`)")
  bfm_path = bfm_dir / "01_MorphableModel.mat"
  bfm = _loadmat(bfm_path)
  need = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV")
  lacking = [k for k in need if k not in bfm]
  if lacking:
    raise FaceModelError(f"{bfm_dir / '01_MorphableModel.mat'}: lacks keys {lacking}")
  _check_basis(bfm_path, bfm["shapeMU"], bfm["shapePC"], bfm["shapeEV"],
               ("shapeMU", "shapePC", "shapeEV"), N_ID)
  _check_basis(bfm_path, bfm["texMU"], bfm["texPC"], bfm["texEV"], ("texMU", "texPC", "texEV"),
               N_TEX)
  n_bfm = np.asarray(bfm["shapeMU"]).size // 3
  exp_pc = read_exp_pca_bin(bfm_dir / "Exp_Pca.bin")
  if exp_pc.shape[1] < N_EXP:
    raise FaceModelError(f"{bfm_dir / 'Exp_Pca.bin'}: {exp_pc.shape[1]} components, needs {N_EXP}")
  exp_ev = _read_std(bfm_dir / "std_exp.txt", N_EXP)

  def scaled(pc, ev, k):
    pc, ev = np.asarray(pc, np.float64), np.asarray(ev, np.float64).reshape(-1)
    return (pc[:, :k] * ev[None, :k])

  id_base = scaled(bfm["shapePC"], bfm["shapeEV"], N_ID) / 1e5
  ex_base = scaled(exp_pc, exp_ev, N_EXP) / 1e5
  tex_base = scaled(bfm["texPC"], bfm["texEV"], N_TEX)

  n_exp_model = exp_pc.shape[0] // 3
  trim = read_index_file(bfm_dir / "BFM_exp_idx.mat", "trimIndex", n_bfm)
  if len(trim) != n_exp_model:
    raise FaceModelError(f"{bfm_dir / 'BFM_exp_idx.mat'}: 'trimIndex' lists {len(trim)} vertices, "
                         f"the expression basis (Exp_Pca.bin) has {n_exp_model}")
  front = read_index_file(bfm_dir / "BFM_front_idx.mat", "idx", n_exp_model)
  shape_idx = trim[front]            # front vertices among BFM's vertices

  def crop(a, idx):                  # [3N, K] -> [3M, K] keeping vertices idx
    k = a.shape[-1]
    return a.reshape(-1, 3, k)[idx].reshape(-1, k)

  info = _loadmat(bfm_dir / "facemodel_info.mat")
  out = {
      "meanshape": crop(np.asarray(bfm["shapeMU"], np.float64).reshape(-1, 1), shape_idx).T / 1e5,
      "meantex": crop(np.asarray(bfm["texMU"], np.float64).reshape(-1, 1), shape_idx).T,
      "idBase": crop(id_base, shape_idx), "exBase": crop(ex_base, front),
      "texBase": crop(tex_base, shape_idx),
  }
  for k in ("tri", "keypoints", "frontmask2_idx", "skinmask", "point_buf", "tri_mask2"):
    if k in info:
      out[k] = info[k]
  if "tri" not in out or "keypoints" not in out:
    raise FaceModelError(f"{bfm_dir / 'facemodel_info.mat'}: needs 'tri' and 'keypoints'")
  return out


def convert_bfm2009(bfm_dir: str | os.PathLike, out: str | os.PathLike) -> pathlib.Path:
  """Converts the raw BFM 2009 folder; writes `.mat` (Deep3DFaceRecon keys) or `.npz` (project)."""
  import scipy.io
  out = pathlib.Path(out)
  if out.suffix.lower() not in (".mat", ".npz"):
    raise FaceModelError(f"{out}: output must end in .npz (project format) or .mat (Deep3DFaceRecon)")
  arrays = convert_bfm2009_arrays(bfm_dir)
  # Built (and so checked: triangles, landmarks, masks) before anything is written, either format.
  model = bfm_front_arrays_to_model(arrays, source=bfm_dir, name="bfm09_front")
  out.parent.mkdir(parents=True, exist_ok=True)
  if out.suffix.lower() == ".mat":
    scipy.io.savemat(str(out), {k: np.asarray(v, np.float32) if v.dtype.kind == "f" else v
                                for k, v in arrays.items()})
    return out
  return save_npz(model, out)
