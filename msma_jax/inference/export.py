"""Writing results: meshes (OBJ with vertex colours, PLY) through trimesh, coefficients (.npz/.mat).

Coefficient files use Deep3DFaceRecon's key names (`id, exp, tex, angle, gamma, trans`, optional
`lm68`), so `.mat` files interoperate with its tools in both directions.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from msma_jax.face_model.coefficients import FIELDS, CoefficientError, Coefficients

MESH_FORMATS = (".obj", ".ply")


def save_mesh(path: str | os.PathLike, vertices, triangles, colors=None) -> pathlib.Path:
  """Writes one mesh: vertices [V, 3], triangles [F, 3], optional colours [V, 3] in [0, 1].

  The format follows the suffix (.obj with `v x y z r g b` lines, or binary .ply).
  """
  import trimesh
  path = pathlib.Path(path)
  if path.suffix.lower() not in MESH_FORMATS:
    raise ValueError(f"{path}: mesh format must be one of {MESH_FORMATS}")
  vertices = np.asarray(vertices, np.float64)
  triangles = np.asarray(triangles, np.int64)
  if vertices.ndim != 2 or vertices.shape[1] != 3:
    raise ValueError(f"{path}: vertices must be [V, 3], got {vertices.shape}")
  if triangles.ndim != 2 or triangles.shape[1] != 3:
    raise ValueError(f"{path}: triangles must be [F, 3], got {triangles.shape}")
  vertex_colors = None
  if colors is not None:
    colors = np.asarray(colors, np.float64)
    if colors.shape != vertices.shape:
      raise ValueError(f"{path}: colours must be [V, 3] like the vertices, got {colors.shape}")
    vertex_colors = np.round(np.clip(colors, 0.0, 1.0) * 255.0).astype(np.uint8)
  mesh = trimesh.Trimesh(vertices, triangles, vertex_colors=vertex_colors, process=False)
  path.parent.mkdir(parents=True, exist_ok=True)
  mesh.export(path)
  return path


def save_coefficients(path: str | os.PathLike, coeffs: Coefficients, **extra) -> pathlib.Path:
  """Writes coefficients (and extra arrays such as lm68=[68, 2]) to `.npz` or `.mat` by suffix."""
  path = pathlib.Path(path)
  arrays = {**coeffs.to_dict(), **{k: np.asarray(v) for k, v in extra.items()}}
  path.parent.mkdir(parents=True, exist_ok=True)
  suffix = path.suffix.lower()
  if suffix == ".npz":
    np.savez(path, **arrays)
  elif suffix == ".mat":
    import scipy.io
    scipy.io.savemat(str(path), {k: np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f"
                                 else v for k, v in arrays.items()})
  else:
    raise ValueError(f"{path}: coefficient files must end in .npz or .mat")
  return path


def load_coefficients(path: str | os.PathLike) -> Coefficients:
  """Reads `.npz`/`.mat` coefficient files written by msma-jax or Deep3DFaceRecon."""
  path = pathlib.Path(path)
  if not path.exists():
    raise CoefficientError(f"{path}: coefficient file not found")
  suffix = path.suffix.lower()
  try:
    if suffix == ".npz":
      with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    elif suffix == ".mat":
      import scipy.io
      d = scipy.io.loadmat(str(path))
    else:
      raise CoefficientError(f"{path}: coefficient files must end in .npz or .mat")
  except CoefficientError:
    raise
  except Exception as e:
    raise CoefficientError(f"{path}: unreadable coefficient file ({type(e).__name__}: {e})") from e
  missing = [f for f in FIELDS if f not in d]
  if missing:
    raise CoefficientError(f"{path}: missing coefficient groups {missing}")
  return Coefficients.from_dict(d, name=str(path))
