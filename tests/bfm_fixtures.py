"""Small generated files in the Basel Face Model layouts (the real files are licensed)."""
from __future__ import annotations

import pathlib

import numpy as np
import scipy.io


def grid_triangles(n: int) -> np.ndarray:
  """[2 (n-1)², 3] triangles of an n x n row-major vertex grid, CCW seen from +z (x right, y up)."""
  tris = []
  for r in range(n - 1):
    for c in range(n - 1):
      i = r * n + c
      tris += [[i, i + 1, i + n + 1], [i, i + n + 1, i + n]]
  return np.array(tris)


def grid_mesh(n: int = 12):
  """An n x n vertex grid bulging toward +z, CCW triangles seen from +z. Returns (V [n²,3], F)."""
  xs, ys = np.meshgrid(np.linspace(-0.8, 0.8, n), np.linspace(-0.9, 0.9, n))
  z = 0.6 * np.exp(-(xs ** 2 + ys ** 2))
  verts = np.stack([xs, ys, z], -1).reshape(-1, 3)
  return verts, grid_triangles(n)


def point_buf_table(tris: np.ndarray, nv: int, k: int = 8, pad: int = 0) -> np.ndarray:
  """[nv, k] float: per vertex the 1-based indices of the triangles around it, padded with `pad`
  (0, or F + 1 as some BFM files do), as `point_buf` is stored in BFM files."""
  table = np.full((nv, k), pad, np.float64)
  fill = np.zeros(nv, int)
  for f, tri in enumerate(tris):
    for v in tri:
      if fill[v] < k:
        table[v, fill[v]] = f + 1
        fill[v] += 1
  return table


def bfm_front_dict(rng, n: int = 12, k_id: int = 80, k_exp: int = 64, k_tex: int = 80) -> dict:
  """Dict with BFM_model_front.mat keys, shapes and 1-based index conventions."""
  verts, tris = grid_mesh(n)
  nv = verts.shape[0]
  return {
      "meanshape": (verts.reshape(1, -1) + 0.25).astype(np.float32),   # off-centre on purpose
      "idBase": rng.normal(0, 0.01, (3 * nv, k_id)).astype(np.float32),
      "exBase": rng.normal(0, 0.01, (3 * nv, k_exp)).astype(np.float32),
      "meantex": rng.uniform(80, 200, (1, 3 * nv)).astype(np.float32),
      "texBase": rng.normal(0, 5, (3 * nv, k_tex)).astype(np.float32),
      "tri": (tris + 1).astype(np.float64),
      "point_buf": point_buf_table(tris, nv),
      "keypoints": (rng.choice(nv, 68, replace=False) + 1).reshape(1, 68).astype(np.float64),
      "frontmask2_idx": (np.arange(nv // 2) + 1).reshape(-1, 1).astype(np.float64),
      "skinmask": (rng.uniform(size=(1, nv)) > 0.3).astype(np.float64),
      "tri_mask2": (tris + 1).astype(np.float64),
  }


def write_bfm_front_mat(path: pathlib.Path, rng, **kw) -> tuple[pathlib.Path, dict]:
  d = bfm_front_dict(rng, **kw)
  scipy.io.savemat(str(path), d)
  return path, d


def write_raw_bfm09(folder: pathlib.Path, rng, n_bfm: int = 40, n_exp_model: int = 30,
                    n_front: int = 20, k_pc: int = 199, k_exp: int = 79) -> dict:
  """A raw BFM 2009 folder in Deep3DFaceRecon's layout, tiny; returns the arrays written."""
  folder.mkdir(parents=True, exist_ok=True)
  raw = {
      "shapeMU": rng.normal(0, 5e4, (3 * n_bfm, 1)), "shapePC": rng.normal(0, 1, (3 * n_bfm, k_pc)),
      "shapeEV": rng.uniform(1e3, 5e3, (k_pc, 1)), "texMU": rng.uniform(50, 200, (3 * n_bfm, 1)),
      "texPC": rng.normal(0, 1, (3 * n_bfm, k_pc)), "texEV": rng.uniform(1, 30, (k_pc, 1)),
  }
  scipy.io.savemat(str(folder / "01_MorphableModel.mat"), raw)
  exp_mu = rng.normal(0, 1, 3 * n_exp_model).astype(np.float32)
  exp_pc = rng.normal(0, 1, (k_exp, 3 * n_exp_model)).astype(np.float32)   # stored component-major
  with open(folder / "Exp_Pca.bin", "wb") as f:
    f.write(np.array([k_exp], np.int32).tobytes())
    f.write(exp_mu.tobytes())
    f.write(exp_pc.tobytes())
  std_exp = rng.uniform(1e3, 4e3, k_exp)
  np.savetxt(folder / "std_exp.txt", std_exp)
  trim = rng.choice(n_bfm, n_exp_model, replace=False) + 1         # exp-model vertex -> BFM vertex
  front = rng.choice(n_exp_model, n_front, replace=False) + 1      # front vertex -> exp-model vertex
  scipy.io.savemat(str(folder / "BFM_exp_idx.mat"), {"trimIndex": trim.reshape(-1, 1).astype(float)})
  scipy.io.savemat(str(folder / "BFM_front_idx.mat"), {"idx": front.reshape(-1, 1).astype(float)})
  tri = np.array([[1, 2, 3], [2, 4, 3], [3, 4, 5]], float)
  info = {"tri": tri, "keypoints": (np.arange(68) % n_front + 1).reshape(1, 68).astype(float),
          "frontmask2_idx": np.arange(1, 11).reshape(-1, 1).astype(float),
          "skinmask": np.ones((1, n_front)), "point_buf": np.ones((n_front, 8)), "tri_mask2": tri}
  scipy.io.savemat(str(folder / "facemodel_info.mat"), info)
  return dict(raw=raw, exp_pc=exp_pc, std_exp=std_exp, trim=trim, front=front, info=info)
