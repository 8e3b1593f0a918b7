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


def convert_bfm2009_arrays(bfm_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """Returns a dict with Deep3DFaceRecon's `BFM_model_front.mat` keys."""
  bfm_dir = pathlib.Path(bfm_dir)
  missing = [f for f in RAW_FILES if not (bfm_dir / f).exists()]
  if missing:
    raise FaceModelError(f"{bfm_dir}: missing {missing} (see `msma-jax convert-bfm --help`)")
  bfm = _loadmat(bfm_dir / "01_MorphableModel.mat")
  need = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV")
  lacking = [k for k in need if k not in bfm]
  if lacking:
    raise FaceModelError(f"{bfm_dir / '01_MorphableModel.mat'}: lacks keys {lacking}")
  exp_pc = read_exp_pca_bin(bfm_dir / "Exp_Pca.bin")
  exp_ev = np.loadtxt(bfm_dir / "std_exp.txt").reshape(-1)

  def scaled(pc, ev, k):
    pc, ev = np.asarray(pc, np.float64), np.asarray(ev, np.float64).reshape(-1)
    return (pc[:, :k] * ev[None, :k])

  id_base = scaled(bfm["shapePC"], bfm["shapeEV"], N_ID) / 1e5
  ex_base = scaled(exp_pc, exp_ev, N_EXP) / 1e5
  tex_base = scaled(bfm["texPC"], bfm["texEV"], N_TEX)

  front = _loadmat(bfm_dir / "BFM_front_idx.mat")["idx"].reshape(-1).astype(np.int64) - 1
  trim = _loadmat(bfm_dir / "BFM_exp_idx.mat")["trimIndex"].reshape(-1).astype(np.int64) - 1
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
  arrays = convert_bfm2009_arrays(bfm_dir)
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  if out.suffix.lower() == ".mat":
    scipy.io.savemat(str(out), {k: np.asarray(v, np.float32) if v.dtype.kind == "f" else v
                                for k, v in arrays.items()})
    return out
  if out.suffix.lower() != ".npz":
    raise FaceModelError(f"{out}: output must end in .npz (project format) or .mat (Deep3DFaceRecon)")
  return save_npz(bfm_front_arrays_to_model(arrays, source=bfm_dir, name="bfm09_front"), out)
