"""Loading and saving face models: the embedded default, Deep3DFaceRecon's BFM files, project `.npz`.

`load_face_model(name_or_path)` is the one entry point; every failure raises `FaceModelError` naming
the file and what is wrong with it.
"""
from __future__ import annotations

import functools
import importlib.resources
import os
import pathlib

import jax.numpy as jnp
import numpy as np

from msma_jax.face_model.model import CameraDefaults, FaceModel

EMBEDDED_NAME = "embedded"
EMBEDDED_FILE = "embedded_face_model.npz"
# Embedded models: name -> (package file, licence note). "embedded" (the SFM) stays the default.
EMBEDDED_MODELS = {
    EMBEDDED_NAME: (EMBEDDED_FILE, "Surrey Face Model: non-commercial use only (LICENSE-SFM.md)"),
    "embedded-ict": ("ict_face_model.npz",
                     "ICT Face Model Light: MIT, commercial use allowed (LICENSE-ICT.md)"),
}
# BFM files store raw BFM / 1e5 (raw BFM is in micrometres), so 1 unit = 100 mm; camera 10 units away.
BFM_CAMERA = CameraDefaults(focal=1015.0, principal=112.0, distance=10.0, near=5.0, far=15.0)
EMBEDDED_CAMERA = CameraDefaults(focal=1015.0, principal=112.0, distance=1000.0, near=500.0,
                                 far=1500.0)
_NPZ_ARRAYS = ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "tex_basis", "triangles",
               "landmark_indices", "skin_mask", "face_mask")
# candidates: msma_jax.contour; point_buf: Deep3DFaceRecon's vertex normals (0-based, -1 pads)
_NPZ_OPTIONAL = ("uv", "symmetry", "contour_candidates", "point_buf")
NORMAL_MODES = ("auto", "area", "point_buf")
# Bases may be stored in fixed point to keep an asset small: `<basis>_q` int16 [K, V, 3] with a
# scalar `<basis>_step` (model units per count), i.e. basis = moveaxis(q, 0, -1) * step.
_NPZ_FIXED_POINT = ("id_basis", "exp_basis")


class FaceModelError(ValueError):
  """A face-model file that is missing, unreadable or lacks what the project needs."""


def available_face_models() -> list[str]:
  """Names accepted by `load_face_model` besides file paths."""
  return list(EMBEDDED_MODELS)


def face_model_license(name: str) -> str:
  """One line on the licence of the embedded model `name` (which may be used commercially)."""
  return EMBEDDED_MODELS[name][1]


def load_face_model(name_or_path: str | os.PathLike = EMBEDDED_NAME, *,
                    normals: str = "auto") -> FaceModel:
  """Loads an embedded model (`available_face_models()`: "embedded" = SFM, "embedded-ict" = ICT),
  a Deep3DFaceRecon `BFM_model_front.mat`, a project `.npz` or an eos `.bin`.

  normals: "auto" (Deep3DFaceRecon's point_buf normals for models that carry a point_buf, i.e.
  BFM files; area-weighted for the others), "area" or "point_buf" (`with_normals`).
  """
  return with_normals(_load(name_or_path), normals)


def _load(name_or_path) -> FaceModel:
  if str(name_or_path) in EMBEDDED_MODELS:
    return _load_embedded(str(name_or_path))
  path = pathlib.Path(name_or_path)
  if not path.exists():
    names = "', '".join(EMBEDDED_MODELS)
    raise FaceModelError(f"{path}: face model file not found (use '{names}', a BFM_model_front.mat, "
                         "a converted .npz, or an eos .bin)")
  suffix = path.suffix.lower()
  if suffix == ".mat":
    return _with_source(load_bfm_front_mat(path), path)
  if suffix == ".npz":
    return _with_source(load_npz(path), path)
  if suffix == ".bin":
    from msma_jax.face_model.eos_loader import load_eos_model
    return load_eos_model(path)
  raise FaceModelError(f"{path}: unknown face model format '{suffix}' (expected .mat, .npz or .bin)")


@functools.lru_cache(maxsize=len(EMBEDDED_MODELS))
def _load_embedded(name: str = EMBEDDED_NAME) -> FaceModel:
  ref = importlib.resources.files("msma_jax.assets").joinpath(EMBEDDED_MODELS[name][0])
  with importlib.resources.as_file(ref) as p:
    return load_npz(p, name=name, camera=EMBEDDED_CAMERA)


def _read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except Exception as e:  # zipfile.BadZipFile, ValueError, OSError ...
    raise FaceModelError(f"{path}: not a readable .npz face model ({type(e).__name__}: {e})") from e


def _dequantize(d: dict[str, np.ndarray], path: pathlib.Path) -> None:
  """Replaces fixed-point `<basis>_q` / `<basis>_step` arrays of `d` by float32 `<basis>` [V, 3, K]."""
  for k in _NPZ_FIXED_POINT:
    if f"{k}_q" not in d:
      continue
    q, step = d.pop(f"{k}_q"), d.pop(f"{k}_step", None)
    if step is None or q.ndim != 3 or q.dtype.kind != "i":
      raise FaceModelError(f"{path}: '{k}_q' must be an integer [K, V, 3] array with a '{k}_step'")
    d[k] = np.moveaxis(q, 0, -1).astype(np.float32) * np.float32(step)


def load_npz(path: str | os.PathLike, *, name: str | None = None,
             camera: CameraDefaults | None = None) -> FaceModel:
  """Reads the project's face-model `.npz` (the format `save_npz` and `convert-bfm` write; bases
  may be float16/32 or fixed point, see `_NPZ_FIXED_POINT`)."""
  path = pathlib.Path(path)
  d = _read_npz(path)
  _dequantize(d, path)
  missing = [k for k in _NPZ_ARRAYS if k not in d]
  if missing:
    raise FaceModelError(f"{path}: face model .npz lacks arrays {missing}")
  if camera is None:
    cam = d.get("camera")
    camera = CameraDefaults(*map(float, cam)) if cam is not None else EMBEDDED_CAMERA
  arrays = {k: d[k] for k in _NPZ_ARRAYS}
  arrays.update({k: d[k] for k in _NPZ_OPTIONAL if k in d})
  fm = _make(arrays, source=path,
             name=name or str(d.get("name", path.stem)),
             unit=str(d.get("unit", "mm")),
             unit_in_mm=float(d.get("unit_in_mm", 1.0)),
             camera=camera,
             expression_names=tuple(str(s) for s in d.get("expression_names", ())))
  return fm


def save_npz(face_model: FaceModel, path: str | os.PathLike) -> pathlib.Path:
  """Writes `face_model` in the project's `.npz` format (readable by `load_face_model`)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = {k: np.asarray(getattr(face_model, k)) for k in _NPZ_ARRAYS}
  arrays.update({k: np.asarray(getattr(face_model, k)) for k in _NPZ_OPTIONAL
                 if getattr(face_model, k) is not None})
  np.savez_compressed(path, **arrays, name=np.array(face_model.name), unit=np.array(face_model.unit),
                      unit_in_mm=np.array(face_model.unit_in_mm),
                      camera=np.array(face_model.camera, np.float64),
                      expression_names=np.array(face_model.expression_names, dtype=str))
  return path


def _make(arrays: dict[str, np.ndarray], *, source, **meta) -> FaceModel:
  """Validates shapes/indices of raw arrays and builds a FaceModel (float32/int32 device arrays)."""
  v = arrays["mean_shape"].shape[0]
  checks = {
      "mean_shape": (v, 3), "mean_albedo": (v, 3), "skin_mask": (v,), "face_mask": (v,),
      "landmark_indices": (68,),
  }
  for k, shape in checks.items():
    if arrays[k].shape != shape:
      raise FaceModelError(f"{source}: '{k}' has shape {arrays[k].shape}, expected {shape}")
  for k in ("id_basis", "exp_basis", "tex_basis"):
    a = arrays[k]
    if a.ndim != 3 or a.shape[:2] != (v, 3):
      raise FaceModelError(f"{source}: '{k}' has shape {a.shape}, expected ({v}, 3, K)")
  tri = arrays["triangles"]
  if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= v:
    raise FaceModelError(f"{source}: 'triangles' must be [F, 3] vertex indices in [0, {v})")
  lm = arrays["landmark_indices"]
  if lm.min() < 0 or lm.max() >= v:
    raise FaceModelError(f"{source}: 'landmark_indices' must lie in [0, {v})")
  for k in ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "tex_basis"):
    if not np.all(np.isfinite(arrays[k])):
      raise FaceModelError(f"{source}: '{k}' contains NaN or Inf")
  out = {k: jnp.asarray(arrays[k], jnp.float32)
         for k in ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "tex_basis", "skin_mask")}
  out["triangles"] = jnp.asarray(tri, jnp.int32)
  from msma_jax.render.antialias import triangle_neighbors
  out["triangle_neighbors"] = jnp.asarray(triangle_neighbors(tri), jnp.int32)
  out["landmark_indices"] = jnp.asarray(lm, jnp.int32)
  out["face_mask"] = jnp.asarray(arrays["face_mask"], bool)
  if arrays.get("uv") is not None:
    out["uv"] = jnp.asarray(arrays["uv"], jnp.float32)
  if arrays.get("symmetry") is not None:
    out["symmetry"] = jnp.asarray(arrays["symmetry"], jnp.int32)
  cc = arrays.get("contour_candidates")
  if cc is not None:
    if cc.ndim != 2 or cc.shape[0] != 17 or cc.dtype.kind not in "iu" or cc.min() < 0 or cc.max() >= v:
      raise FaceModelError(f"{source}: 'contour_candidates' must be [17, K] vertex indices in "
                           f"[0, {v}), got {cc.dtype} {cc.shape}")
    out["contour_candidates"] = jnp.asarray(cc, jnp.int32)
  pb = arrays.get("point_buf")
  if pb is not None:
    f = tri.shape[0]
    if pb.ndim != 2 or pb.shape[0] != v or pb.dtype.kind not in "iu" or pb.min() < -1 or pb.max() >= f:
      raise FaceModelError(f"{source}: 'point_buf' must be [{v}, K] triangle indices in [-1, {f}) "
                           f"(-1 pads), got {pb.dtype} {pb.shape}")
    out["point_buf"] = jnp.asarray(pb, jnp.int32)
  return FaceModel(**out, **meta)


def with_normals(face_model: FaceModel, normals: str = "auto") -> FaceModel:
  """The model with vertex normals of `normals`: "auto" (Deep3DFaceRecon's where the model carries
  a point_buf, else area-weighted), "area" (drops the point_buf) or "point_buf" (an error without
  one)."""
  if normals not in NORMAL_MODES:
    raise FaceModelError(f"normals must be one of {NORMAL_MODES}, got {normals!r}")
  if normals == "area":
    return face_model.replace(point_buf=None)
  if normals == "point_buf" and face_model.point_buf is None:
    raise FaceModelError(f"face model {face_model.name!r} has no point_buf: its normals can only "
                         "be area-weighted (normals 'area' or 'auto')")
  return face_model


# ---- Basel Face Model (Deep3DFaceRecon layout) --------------------------------------------------------

BFM_FRONT_REQUIRED = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints")


def _loadmat(path: pathlib.Path) -> dict:
  import scipy.io
  try:
    return scipy.io.loadmat(str(path))
  except Exception as e:
    raise FaceModelError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from e


def bfm_front_arrays_to_model(m: dict, *, source, name: str = "bfm") -> FaceModel:
  """Builds a FaceModel from a dict with Deep3DFaceRecon `BFM_model_front.mat` keys.

  Conventions of that file (handled here): flattened [3N] vectors, bases [3N, K], texture in 0-255,
  1-based `tri`, `keypoints`, `frontmask2_idx`. Like Deep3DFaceRecon, the mean shape is re-centred on
  its vertex centroid.
  """
  missing = [k for k in BFM_FRONT_REQUIRED if k not in m]
  if missing:
    raise FaceModelError(f"{source}: BFM .mat lacks keys {missing} "
                         f"(a Deep3DFaceRecon BFM_model_front.mat has {list(BFM_FRONT_REQUIRED)})")
  mean = np.asarray(m["meanshape"], np.float64).reshape(-1, 3)
  n = mean.shape[0]

  def basis(key):
    b = np.asarray(m[key], np.float64)
    if b.ndim != 2 or b.shape[0] != 3 * n:
      raise FaceModelError(f"{source}: '{key}' has shape {b.shape}, expected ({3 * n}, K)")
    return b.reshape(n, 3, -1)

  meantex = np.asarray(m["meantex"], np.float64).reshape(-1)
  if meantex.size != 3 * n:
    raise FaceModelError(f"{source}: 'meantex' has {meantex.size} values, expected {3 * n}")
  tri = np.asarray(m["tri"]).astype(np.int64) - 1
  keypoints = np.asarray(m["keypoints"]).reshape(-1).astype(np.int64) - 1
  if keypoints.size != 68:
    raise FaceModelError(f"{source}: 'keypoints' has {keypoints.size} entries, expected 68")
  skin = (np.asarray(m["skinmask"], np.float64).reshape(-1) if "skinmask" in m
          else np.ones(n))
  if skin.size != n:
    raise FaceModelError(f"{source}: 'skinmask' has {skin.size} entries, expected {n}")
  face_mask = np.zeros(n, bool)
  if "frontmask2_idx" in m:
    face_mask[np.asarray(m["frontmask2_idx"]).reshape(-1).astype(np.int64) - 1] = True
  else:
    face_mask[:] = True
  point_buf = None
  if "point_buf" in m:
    # 1-based triangle indices. Deep3DFaceRecon subtracts 1 and appends a zero normal at index F,
    # which pads of either 0 (-> -1, the last row) or F + 1 (-> F) reach: both become -1 here.
    point_buf = np.asarray(m["point_buf"]).astype(np.int64) - 1
    point_buf[point_buf == tri.shape[0]] = -1
  arrays = dict(
      point_buf=point_buf,
      mean_shape=mean - mean.mean(axis=0),
      id_basis=basis("idBase"), exp_basis=basis("exBase"),
      mean_albedo=meantex.reshape(n, 3) / 255.0, tex_basis=basis("texBase") / 255.0,
      triangles=tri, landmark_indices=keypoints, skin_mask=skin, face_mask=face_mask)
  return _make(arrays, source=source, name=name, unit="bfm (0.1 m)", unit_in_mm=100.0,
               camera=BFM_CAMERA)


def _with_source(face_model: FaceModel, path: pathlib.Path) -> FaceModel:
  return face_model.replace(source=str(path.absolute()))


def load_bfm_front_mat(path: str | os.PathLike) -> FaceModel:
  """Reads Deep3DFaceRecon's `BFM_model_front.mat` (35,709 vertices, 80/64/80 bases)."""
  path = pathlib.Path(path)
  return bfm_front_arrays_to_model(_loadmat(path), source=path, name=path.stem)
