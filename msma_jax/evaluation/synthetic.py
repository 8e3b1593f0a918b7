"""The synthetic benchmark: a fixed, versioned held-out set rendered from the face model.

Version `synthetic-v1`. Faces are sampled cell by cell on the grid

    yaw      |yaw| in [0, 30), [30, 60), [60, 80] degrees (sign random; pitch ±15°, roll ±10°)
    expression  neutral (all 0) | expressive (blendshape models: one blendshape at 0.5-1.0;
                PCA expression bases: N(0, 1) coefficients)
    lighting    ambient (only the DC band: brightness / tint) | directional (a light from a random
                direction in the front hemisphere, strength 0.35-0.6 in the first-order SH bands,
                plus small second-order terms)

with `per_cell` faces per cell (default 8: 12 cells, 96 faces). Identity ~ N(0, 1), albedo
~ 0.8·N(0, 1), translation x, y ~ U(±10 mm), z ~ U(±50 mm), a uniform grey background U(0.2, 0.8).
Each face is drawn by its own NumPy PCG64 generator seeded with (seed, cell index, face index), so a
larger per_cell keeps the smaller set's faces, and the set is identical for a given (face model,
per_cell, seed).
Images are rendered at 224x224 with `render_face` and clipped to [0, 1]; the ground-truth 2D
landmarks are the projected landmark vertices. The coefficient fingerprint (SHA-1 of the float32
coefficients) goes into every report so that results name exactly the set they were measured on.
Whoever changes anything above bumps the version.

Metrics per face (see `metrics`): vertex RMSE over the face model's `face_mask` region after rigid
and after similarity alignment, in mm; 2D landmark NME in % of the ground-truth landmarks' bounding
box size sqrt(w·h); pose error = the angle of R_pred^T R_gt in degrees. Reported as means per bin
(each yaw, expression and lighting bin, and all faces) for the predictor and the mean-face baseline.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time

import numpy as np
from scipy.spatial.transform import Rotation

from msma_jax.evaluation.metrics import aligned_vertex_errors, landmark_nme
from msma_jax.evaluation.predictors import (MeanFacePredictor, OraclePredictor, Predictor,
                                            predict_checked, resolve_predictor)
from msma_jax.face_model import Coefficients, FaceModel

SYNTHETIC_VERSION = "synthetic-v1"
YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 80.0))
EXPRESSION_BINS = ("neutral", "expressive")
LIGHTING_BINS = ("ambient", "directional")
IMAGE_SIZE = 224


def yaw_bin_name(lo: float, hi: float) -> str:
  return f"yaw {lo:g}-{hi:g}"


@dataclasses.dataclass
class SyntheticSet:
  """The rendered benchmark. coefficients: batch [N]; images [N, 224, 224, 3] float32 in [0, 1];
  landmarks [N, 68, 2] pixels; bins: {'yaw', 'expression', 'lighting'} -> [N] bin names."""
  version: str
  face_model: str
  per_cell: int
  seed: int
  coefficients: Coefficients
  images: np.ndarray
  landmarks: np.ndarray
  bins: dict[str, np.ndarray]
  fingerprint: str

  def __len__(self) -> int:
    return len(self.images)


def _cell_coefficients(face_model: FaceModel, rng: np.random.Generator, n: int, yaw_range,
                       expression: str, lighting: str) -> tuple[np.ndarray, np.ndarray]:
  """Flat coefficients [n, total] float32 and backgrounds [n, 3] for one cell."""
  s = face_model.sizes
  sl = s.slices()
  flat = np.zeros((n, s.total), np.float64)
  flat[:, sl["id"]] = rng.standard_normal((n, s.id))
  flat[:, sl["tex"]] = 0.8 * rng.standard_normal((n, s.tex))
  if expression == "expressive" and s.exp:
    if face_model.expression_names:            # blendshapes: one expression, clearly visible
      pick = rng.integers(0, s.exp, n)
      flat[np.arange(n), sl["exp"].start + pick] = rng.uniform(0.5, 1.0, n)
    else:                                      # a PCA expression basis scaled to N(0, 1)
      flat[:, sl["exp"]] = rng.standard_normal((n, s.exp))
  yaw = rng.uniform(*yaw_range, n) * rng.choice([-1.0, 1.0], n)
  pitch = rng.uniform(-15.0, 15.0, n)
  roll = rng.uniform(-10.0, 10.0, n)
  flat[:, sl["angle"]] = np.radians(np.stack([pitch, yaw, roll], 1))
  gamma = np.zeros((n, 3, 9))
  gamma[:, :, 0] = rng.uniform(-0.1, 0.2, (n, 1)) + 0.03 * rng.standard_normal((n, 3))
  if lighting == "directional":
    d = rng.standard_normal((n, 3))
    d[:, 2] = np.abs(d[:, 2]) + 0.3            # from the front hemisphere (camera on +z)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    strength = rng.uniform(0.35, 0.6, (n, 1))
    # SH bands 1-3 are -y, z, -x (DESIGN.md), so this lights surfaces facing d.
    gamma[:, :, 1:4] = (strength * np.stack([-d[:, 1], d[:, 2], -d[:, 0]], 1))[:, None, :]
    gamma[:, :, 4:] = 0.05 * rng.standard_normal((n, 1, 5))
  flat[:, sl["gamma"]] = gamma.reshape(n, 27)
  trans_mm = np.stack([rng.uniform(-10, 10, n), rng.uniform(-10, 10, n), rng.uniform(-50, 50, n)], 1)
  flat[:, sl["trans"]] = trans_mm / face_model.unit_in_mm
  background = np.repeat(rng.uniform(0.2, 0.8, (n, 1)), 3, 1)
  return flat.astype(np.float32), background.astype(np.float32)


def synthetic_cells():
  """The 12 cells in their fixed order: (cell index, yaw range, expression, lighting)."""
  cells = []
  for yr in YAW_BINS:
    for e in EXPRESSION_BINS:
      for li in LIGHTING_BINS:
        cells.append((len(cells), yr, e, li))
  return cells


def synthetic_coefficients(face_model: FaceModel, per_cell: int = 8, seed: int = 0):
  """(Coefficients [N], backgrounds [N, 3], bins dict) of the benchmark, without rendering."""
  if per_cell < 1:
    raise ValueError(f"synthetic benchmark: per_cell must be >= 1, got {per_cell}")
  flats, bgs, bins = [], [], {"yaw": [], "expression": [], "lighting": []}
  for index, yr, e, li in synthetic_cells():
    for i in range(per_cell):
      rng = np.random.Generator(np.random.PCG64([seed, index, i]))
      flat, bg = _cell_coefficients(face_model, rng, 1, yr, e, li)
      flats.append(flat)
      bgs.append(bg)
    bins["yaw"] += [yaw_bin_name(*yr)] * per_cell
    bins["expression"] += [e] * per_cell
    bins["lighting"] += [li] * per_cell
  flat = np.concatenate(flats)
  coeffs = Coefficients.from_flat(flat, face_model.sizes, name="synthetic benchmark")
  return coeffs, np.concatenate(bgs), {k: np.asarray(v) for k, v in bins.items()}


def fingerprint(coeffs: Coefficients) -> str:
  data = np.ascontiguousarray(np.asarray(coeffs.to_flat(), np.float32)).tobytes()
  return hashlib.sha1(data).hexdigest()[:16]


def _batches(n: int, batch_size: int):
  for s in range(0, n, batch_size):
    yield np.arange(s, min(s + batch_size, n))


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  """Pads the leading axis to `size` by repeating the last row (one jit shape for every batch)."""
  if len(a) == size:
    return a
  return np.concatenate([a, np.repeat(a[-1:], size - len(a), 0)])


def build_synthetic_set(face_model: FaceModel, *, per_cell: int = 8, seed: int = 0,
                        batch_size: int = 8, progress: bool = False) -> SyntheticSet:
  """Samples and renders the benchmark (deterministic; see the module docstring)."""
  import jax.numpy as jnp
  coeffs, backgrounds, bins = synthetic_coefficients(face_model, per_cell, seed)
  render = _renderer(face_model)
  flat = np.asarray(coeffs.to_flat())
  n = len(flat)
  images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
  landmarks = np.zeros((n, 68, 2), np.float32)
  batches = list(_batches(n, batch_size))
  for idx in _progress(batches, progress, "render synthetic set"):
    c = Coefficients.from_flat(jnp.asarray(_pad(flat[idx], batch_size)), face_model.sizes)
    bg = jnp.asarray(_pad(backgrounds[idx], batch_size)[:, None, None, :]
                     * np.ones((1, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))
    out = render(c, bg)
    images[idx] = np.clip(np.asarray(out.image)[:len(idx)], 0.0, 1.0)
    landmarks[idx] = np.asarray(out.landmarks_2d)[:len(idx)]
  return SyntheticSet(SYNTHETIC_VERSION, face_model.name, per_cell, seed, coeffs, images, landmarks,
                      bins, fingerprint(coeffs))


_RENDERERS: dict[int, tuple] = {}


def _renderer(face_model: FaceModel):
  """One jitted render_face per face model object, so repeated builds compile once per process."""
  import jax

  from msma_jax.camera import Camera
  from msma_jax.render import render_face
  hit = _RENDERERS.get(id(face_model))
  if hit is None or hit[0] is not face_model:
    camera = Camera.for_face_model(face_model, IMAGE_SIZE)
    hit = (face_model, jax.jit(lambda c, bg: render_face(face_model, c, camera, background=bg)))
    _RENDERERS[id(face_model)] = hit
  return hit[1]


def _progress(items, enabled: bool, desc: str):
  if not enabled:
    return items
  from tqdm import tqdm
  return tqdm(items, desc=desc, unit="batch", leave=False)


@dataclasses.dataclass
class SyntheticScores:
  """Per-face scores of one predictor (each [N]) and per-vertex mean errors [V] (mm, rigid)."""
  name: str
  vertex_rmse_rigid_mm: np.ndarray
  vertex_rmse_similarity_mm: np.ndarray
  nme_2d_percent: np.ndarray
  pose_error_deg: np.ndarray
  vertex_errors_mm: np.ndarray
  seconds: float

  METRICS = ("vertex_rmse_rigid_mm", "vertex_rmse_similarity_mm", "nme_2d_percent", "pose_error_deg")


def score_predictions(face_model: FaceModel, gt: Coefficients, pred: Coefficients,
                      gt_landmarks: np.ndarray) -> dict[str, np.ndarray]:
  """Per-face metrics of predicted vs ground-truth coefficients (batch [B]); see the module doc.

  Returns arrays [B] (and 'vertex_errors_mm' [B, V], rigid alignment) in mm / % / degrees.
  """
  import jax.numpy as jnp

  from msma_jax import camera as cam
  mask = np.asarray(face_model.face_mask, bool)
  gv = np.asarray(face_model.shape(gt), np.float64)
  pv = np.asarray(face_model.shape(pred), np.float64)
  b = len(gv)
  rigid = np.zeros((b, len(mask)))
  sim = np.zeros(b)
  for i in range(b):
    rigid[i] = aligned_vertex_errors(pv[i], gv[i], mask, align="rigid") * face_model.unit_in_mm
    sim[i] = np.sqrt(np.mean(aligned_vertex_errors(pv[i], gv[i], mask, align="similarity")[mask] ** 2))
  camera = cam.Camera.for_face_model(face_model, IMAGE_SIZE)
  world = cam.rigid_transform(face_model.landmarks_3d(jnp.asarray(pv, jnp.float32)), pred.angle,
                              pred.trans)
  pred_lm = np.asarray(cam.project(world, camera))
  # R = Rz·Ry·Rx is SciPy's extrinsic "xyz"; magnitude() avoids arccos's loss of precision near 0.
  r_pred = Rotation.from_euler("xyz", np.asarray(pred.angle, np.float64))
  r_gt = Rotation.from_euler("xyz", np.asarray(gt.angle, np.float64))
  return {
      "vertex_rmse_rigid_mm": np.sqrt(np.mean(rigid[:, mask] ** 2, axis=1)),
      "vertex_rmse_similarity_mm": sim * face_model.unit_in_mm,
      "nme_2d_percent": 100.0 * landmark_nme(pred_lm, gt_landmarks),
      "pose_error_deg": np.degrees((r_pred.inv() * r_gt).magnitude()),
      "vertex_errors_mm": rigid,
  }


def evaluate_synthetic(predictor: Predictor, face_model: FaceModel, dataset: SyntheticSet, *,
                       batch_size: int = 8, progress: bool = False) -> SyntheticScores:
  """Runs `predictor` on every benchmark image and scores it against the ground truth."""
  flat = np.asarray(dataset.coefficients.to_flat())
  parts: dict[str, list] = {k: [] for k in (*SyntheticScores.METRICS, "vertex_errors_mm")}
  start = time.perf_counter()
  for idx in _progress(list(_batches(len(dataset), batch_size)), progress, f"evaluate {predictor.name}"):
    pred = predict_checked(predictor, dataset.images[idx], dataset.landmarks[idx], face_model)
    gt = Coefficients.from_flat(flat[idx], face_model.sizes)
    scores = score_predictions(face_model, gt, pred, dataset.landmarks[idx])
    for k in parts:
      parts[k].append(scores[k])
  seconds = time.perf_counter() - start
  per_face = {k: np.concatenate(parts[k]) for k in SyntheticScores.METRICS}
  vertex = np.concatenate(parts["vertex_errors_mm"]).mean(axis=0)
  vertex[~np.asarray(face_model.face_mask, bool)] = np.nan      # outside the measured region
  return SyntheticScores(predictor.name, **per_face, vertex_errors_mm=vertex, seconds=seconds)


def bin_rows(scores: SyntheticScores, dataset: SyntheticSet) -> list[dict]:
  """Table rows: all faces, then each yaw / expression / lighting bin, with the mean of each metric."""
  groups = [("all", np.ones(len(dataset), bool))]
  for lo, hi in YAW_BINS:
    groups.append((yaw_bin_name(lo, hi), dataset.bins["yaw"] == yaw_bin_name(lo, hi)))
  for e in EXPRESSION_BINS:
    groups.append((e, dataset.bins["expression"] == e))
  for li in LIGHTING_BINS:
    groups.append((li, dataset.bins["lighting"] == li))
  rows = []
  for name, sel in groups:
    row = {"predictor": scores.name, "bin": name, "n": int(sel.sum())}
    for m in SyntheticScores.METRICS:
      row[m] = float(np.mean(getattr(scores, m)[sel])) if sel.any() else math.nan
    rows.append(row)
  return rows


def run_synthetic(out_dir, *, predictor="mean", face_model: FaceModel | str = "embedded",
                  per_cell: int = 8, seed: int = 0, oracle: bool = False, batch_size: int = 8,
                  progress: bool = True, log=None, log_fn=None) -> dict:
  """Builds the set, evaluates the predictor, the mean-face baseline (and the oracle), writes the
  report (report.md, synthetic.csv, curves and heat maps) to out_dir. Returns summary numbers."""
  from msma_jax.evaluation.plots import plot_cumulative_errors, plot_vertex_heatmap
  from msma_jax.evaluation.report import Report
  from msma_jax.face_model import load_face_model
  fm = load_face_model(face_model) if isinstance(face_model, str) else face_model
  # The predictor first: a spec that does not resolve is answered before minutes of rendering.
  predictors: list[Predictor] = [resolve_predictor(predictor, fm)]
  report = Report(out_dir, "Synthetic benchmark", protocol="synthetic", log=log, log_fn=log_fn)
  t0 = time.perf_counter()
  dataset = build_synthetic_set(fm, per_cell=per_cell, seed=seed, batch_size=batch_size,
                                progress=progress)
  render_s = time.perf_counter() - t0
  if not isinstance(predictors[0], MeanFacePredictor):
    predictors.append(MeanFacePredictor(fm))
  if oracle:
    predictors.append(OraclePredictor(dataset.images, dataset.coefficients))
  results = [evaluate_synthetic(p, fm, dataset, batch_size=batch_size, progress=progress)
             for p in predictors]
  report.settings.update({
      "version": dataset.version, "face model": f"{fm.name} ({fm.n_vertices} vertices)",
      "faces": f"{len(dataset)} ({per_cell} per cell x 12 cells)", "seed": seed,
      "coefficient fingerprint": dataset.fingerprint,
      "region": f"face_mask ({int(np.asarray(fm.face_mask).sum())} vertices)",
      "render time (s)": f"{render_s:.1f}",
  })
  columns = ["predictor", "bin", "n", *SyntheticScores.METRICS]
  all_rows = []
  for r in results:
    rows = bin_rows(r, dataset)
    all_rows += rows
    report.add_table(_slug(r.name), rows, columns, caption=r.name,
                     formats={"vertex_rmse_rigid_mm": ".2f", "vertex_rmse_similarity_mm": ".2f",
                              "nme_2d_percent": ".2f", "pose_error_deg": ".2f"})
    report.add_metrics({f"{_slug(r.name)}/{row['bin'].replace(' ', '_')}/{m}": row[m]
                        for row in rows for m in SyntheticScores.METRICS})
  report.add_table("synthetic", all_rows, columns, markdown=False)       # all predictors, one CSV
  curve = plot_cumulative_errors({r.name: r.vertex_rmse_rigid_mm for r in results},
                                 report.out_dir / "synthetic_vertex_rmse_ced.png",
                                 xlabel="vertex RMSE after rigid alignment (mm)",
                                 title=f"{dataset.version}: cumulative error")
  report.add_figure(curve, "cumulative distribution of the per-face vertex RMSE (rigid)")
  nme = plot_cumulative_errors({r.name: r.nme_2d_percent for r in results},
                               report.out_dir / "synthetic_nme2d_ced.png",
                               xlabel="2D landmark NME (% of bounding-box size)",
                               title=f"{dataset.version}: landmark NME")
  report.add_figure(nme, "cumulative distribution of the 2D landmark NME")
  drawn = {r.name: r.vertex_errors_mm for r in results if r.name != OraclePredictor.name}
  heat = plot_vertex_heatmap(fm, drawn,
                             report.out_dir / "synthetic_vertex_error.png",
                             title=f"{dataset.version}: mean per-vertex error (rigid alignment)")
  report.add_figure(heat, "mean per-vertex error on the mean face (mm; grey: outside the region)")
  for r in results:
    report.note(f"{r.name}: {len(dataset)} faces in {r.seconds:.1f} s "
                f"({len(dataset) / max(r.seconds, 1e-9):.1f} faces/s)")
  report.write()
  return {"report": str(report.out_dir / "report.md"), "faces": len(dataset),
          "fingerprint": dataset.fingerprint, "render_seconds": render_s,
          "results": {r.name: {m: float(np.mean(getattr(r, m))) for m in SyntheticScores.METRICS}
                      | {"seconds": r.seconds} for r in results}}


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")
