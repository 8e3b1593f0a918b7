"""Error metrics: aligned vertex errors, landmark NME, scan-to-mesh distances, summaries.

Plain NumPy functions on the host (float64). Distances are returned in the units of their inputs;
the protocols convert to millimetres with the face model's `unit_in_mm` (or the scan's unit).

Definitions (the README's evaluation section repeats them):

* **vertex RMSE** (same topology): sqrt(mean over the face region of |T(pred_i) - gt_i|²) where T is
  the least-squares rigid (rotation + translation) or similarity (+ isotropic scale) transform of the
  predicted vertices onto the ground truth, fitted over the same region (`alignment.fit_similarity`).
* **landmark NME**: mean over the K points of |pred_k - gt_k| divided by a normaliser per face; with
  `bbox_size` (sqrt(width · height) of the ground-truth 2D landmarks' bounding box, AFLW2000-3D's
  convention) it is scale-free and stays defined in profile views, where the inter-ocular distance
  collapses.
* **point-to-point**: distance from each scan point to the nearest mesh vertex.
* **point-to-plane**: |(p - v) · n_v| with v the nearest mesh vertex and n_v its area-weighted unit
  normal: the distance to the tangent plane there (the MICC Florence protocol's measure).
* **point-to-surface**: distance to the closest point of the mesh surface (NoW's scan-to-mesh).
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np

from msma_jax.evaluation.alignment import fit_similarity
from msma_jax.evaluation.surface import MeshSearch, vertex_normals

AlignMode = Literal["rigid", "similarity", "none"]


def aligned_vertex_errors(pred, gt, mask=None, *, align: AlignMode = "rigid") -> np.ndarray:
  """Per-vertex distances [V] after aligning pred onto gt (both [V, 3], same topology).

  mask: optional [V] bool, the region the alignment is fitted on (errors are returned for every
  vertex so that they can be drawn; average them over the same mask). Units: those of the inputs.
  """
  p = np.asarray(pred, np.float64)
  g = np.asarray(gt, np.float64)
  if p.shape != g.shape or p.ndim != 2 or p.shape[1] != 3:
    raise ValueError(f"aligned_vertex_errors: pred {p.shape} and gt {g.shape} must both be [V, 3] "
                     "(same topology)")
  m = np.ones(len(p), bool) if mask is None else np.asarray(mask, bool)
  if m.shape != (len(p),) or m.sum() < 3:
    raise ValueError(f"aligned_vertex_errors: mask must be [V] = [{len(p)}] with at least 3 vertices")
  if align != "none":
    if align not in ("rigid", "similarity"):
      raise ValueError(f"aligned_vertex_errors: align must be rigid, similarity or none, got {align!r}")
    p = fit_similarity(p[m], g[m], scale=align == "similarity").apply(p)
  return np.linalg.norm(p - g, axis=1)


def vertex_rmse(pred, gt, mask=None, *, align: AlignMode = "rigid", unit_in_mm: float = 1.0) -> float:
  """Vertex RMSE in millimetres over `mask` after `align` (see `aligned_vertex_errors`)."""
  e = aligned_vertex_errors(pred, gt, mask, align=align)
  m = np.ones(len(e), bool) if mask is None else np.asarray(mask, bool)
  return float(np.sqrt(np.mean(e[m] ** 2)) * unit_in_mm)


def bbox_size(landmarks) -> np.ndarray:
  """sqrt(width · height) of the 2D bounding box of landmarks [..., K, >=2] (first two coordinates)."""
  lm = np.asarray(landmarks, np.float64)[..., :2]
  wh = lm.max(axis=-2) - lm.min(axis=-2)
  return np.sqrt(wh[..., 0] * wh[..., 1])


def landmark_nme(pred, gt, normalizer=None) -> np.ndarray:
  """Normalised mean error [...] of landmarks pred, gt [..., K, D] (D = 2 or 3).

  normalizer: [...] per face; default `bbox_size(gt)`. Multiply by 100 for the usual percentage.
  """
  p = np.asarray(pred, np.float64)
  g = np.asarray(gt, np.float64)
  if p.shape != g.shape or p.ndim < 2:
    raise ValueError(f"landmark_nme: pred {p.shape} and gt {g.shape} must both be [..., K, D]")
  norm = bbox_size(g) if normalizer is None else np.asarray(normalizer, np.float64)
  if np.any(norm <= 0):
    raise ValueError("landmark_nme: normaliser must be positive (degenerate ground-truth landmarks?)")
  return np.linalg.norm(p - g, axis=-1).mean(axis=-1) / norm


def point_to_point_distances(points, vertices) -> np.ndarray:
  """[M] distance from each point [M, 3] to the nearest of vertices [V, 3]."""
  return MeshSearch(vertices).nearest_vertices(points)[0]


def point_to_plane_distances(points, vertices, triangles, *, search: Optional[MeshSearch] = None,
                             normals=None) -> np.ndarray:
  """[M] |(p - v) · n_v| with v the vertex nearest to p and n_v its unit vertex normal.

  points [M, 3]; the mesh vertices [V, 3] and triangles [F, 3] (for the normals; or pass `normals`
  [V, 3]). `search`: a prebuilt `MeshSearch` over the same vertices.
  """
  search = search or MeshSearch(vertices)
  n = vertex_normals(vertices, triangles) if normals is None else np.asarray(normals, np.float64)
  p = np.asarray(points, np.float64)
  _, idx = search.nearest_vertices(p)
  return np.abs(np.sum((p - search.vertices[idx]) * n[idx], axis=1))


def point_to_surface_distances(points, vertices, triangles) -> np.ndarray:
  """[M] distance from each point [M, 3] to the closest point on the mesh surface."""
  return MeshSearch(vertices, triangles).closest(points)[1]


def rmse(values) -> float:
  v = np.asarray(values, np.float64)
  return float(np.sqrt(np.mean(v ** 2)))


def summarize(values) -> dict[str, float]:
  """{'n', 'mean', 'std' (population), 'median'} of finite values (NaN entries when empty)."""
  v = np.asarray(values, np.float64).reshape(-1)
  v = v[np.isfinite(v)]
  if len(v) == 0:
    return {"n": 0, "mean": float("nan"), "std": float("nan"), "median": float("nan")}
  return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std()),
          "median": float(np.median(v))}


def cumulative_error(values, thresholds) -> np.ndarray:
  """Fraction (0-1) of values <= each threshold [T]: the cumulative error distribution."""
  v = np.sort(np.asarray(values, np.float64).reshape(-1))
  t = np.asarray(thresholds, np.float64)
  if len(v) == 0:
    return np.zeros_like(t)
  return np.searchsorted(v, t, side="right") / len(v)
