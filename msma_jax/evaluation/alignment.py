"""Similarity transforms: closed-form Procrustes (Umeyama) and ICP with isotropic scale.

A `Similarity` maps points x -> scale · x @ R.T + t (the same row-vector convention as
`msma_jax.camera.rigid_transform`). All functions here are NumPy float64 on the host: evaluation is
not differentiated, and float64 keeps sub-0.01-degree rotations meaningful.

ICP finds correspondences with `msma_jax.evaluation.surface.closest_points_on_mesh` (scipy's cKDTree
plus the exact closest point on the candidate triangles), so it matches each target point to the
source *surface*, not only to its vertices: identical shapes sampled differently still align exactly.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import numpy as np

from msma_jax.evaluation.surface import MeshSearch


@dataclasses.dataclass(frozen=True)
class Similarity:
  """x -> scale · x @ rotation.T + translation; scale > 0, rotation [3, 3] proper (det +1)."""
  scale: float
  rotation: np.ndarray
  translation: np.ndarray

  @classmethod
  def identity(cls) -> "Similarity":
    return cls(1.0, np.eye(3), np.zeros(3))

  def apply(self, points) -> np.ndarray:
    """[..., 3] -> [..., 3]."""
    return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

  def apply_vectors(self, vectors) -> np.ndarray:
    """Directions (normals): rotation only."""
    return np.asarray(vectors, np.float64) @ self.rotation.T

  def compose(self, first: "Similarity") -> "Similarity":
    """The transform that applies `first`, then `self`."""
    return Similarity(self.scale * first.scale, self.rotation @ first.rotation,
                      self.scale * first.translation @ self.rotation.T + self.translation)

  def inverse(self) -> "Similarity":
    # x = (y - t) @ R / s for y = s · x @ R.T + t.
    s = self.scale
    return Similarity(1.0 / s, self.rotation.T, -(self.translation @ self.rotation) / s)

  def matrix(self) -> np.ndarray:
    """[4, 4] homogeneous matrix acting on column vectors."""
    m = np.eye(4)
    m[:3, :3] = self.scale * self.rotation
    m[:3, 3] = self.translation
    return m

  def rotation_degrees(self) -> float:
    """Angle of the rotation (degrees, in [0, 180])."""
    return rotation_angle_degrees(self.rotation)


def rotation_angle_degrees(rotation) -> float:
  """Angle (degrees) of a rotation matrix [3, 3]: arccos((trace - 1) / 2)."""
  c = (np.trace(np.asarray(rotation, np.float64)) - 1.0) / 2.0
  return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def fit_similarity(source, target, *, weights=None, scale: bool = True) -> Similarity:
  """Least-squares transform with target ≈ T(source) (Umeyama 1991), never a reflection.

  source, target: [N, 3] corresponding points (N >= 3, not collinear); weights: optional [N] >= 0.
  scale=False gives the rigid (rotation + translation) fit.
  """
  x = np.asarray(source, np.float64)
  y = np.asarray(target, np.float64)
  if x.ndim != 2 or x.shape[1] != 3 or x.shape != y.shape:
    raise ValueError(f"fit_similarity: source {x.shape} and target {y.shape} must both be [N, 3]")
  w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
  if w.shape != (len(x),) or w.sum() <= 0:
    raise ValueError(f"fit_similarity: weights must be [N] = [{len(x)}] with a positive sum")
  w = w / w.sum()
  mx, my = w @ x, w @ y
  xc, yc = x - mx, y - my
  cov = (yc * w[:, None]).T @ xc                      # Σ w · y xᵀ
  u, d, vt = np.linalg.svd(cov)
  # Forbid reflections: flip the weakest axis when det(U Vᵀ) < 0 (Umeyama's S matrix).
  s = np.ones(3)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    s[2] = -1.0
  rotation = (u * s) @ vt
  var_x = float(w @ np.sum(xc * xc, axis=1))
  c = float((d * s).sum() / var_x) if scale and var_x > 0 else 1.0
  return Similarity(c, rotation, my - c * mx @ rotation.T)


@dataclasses.dataclass(frozen=True)
class IcpResult:
  """transform maps the source onto the target; rmse: of the closest-point distances of the kept
  (inlier) pairs in the last iteration, target units; inlier_fraction: of the target points used."""
  transform: Similarity
  rmse: float
  iterations: int
  converged: bool
  inlier_fraction: float


def rotation_from_vector(omega) -> np.ndarray:
  """Rodrigues: [3] axis · angle (radians) -> [3, 3] rotation."""
  w = np.asarray(omega, np.float64)
  theta = float(np.linalg.norm(w))
  if theta < 1e-15:
    return np.eye(3)
  k = w / theta
  kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
  return np.eye(3) + np.sin(theta) * kx + (1.0 - np.cos(theta)) * (kx @ kx)


def _point_to_plane_step(z, y, n, scale: bool) -> Similarity:
  """The similarity increment D minimising sum(((D(z) - y) · n)²), linearised around identity.

  z: current source points [N, 3] (already transformed), y: targets [N, 3], n: unit normals at z.
  D(x) = (1 + sigma) · Rot(omega) · (x - c) + c + tau about the centroid c of z (conditioning).
  """
  c = z.mean(axis=0)
  zc = z - c
  rows = [np.cross(zc, n), n]                                   # omega (3), tau (3)
  if scale:
    rows.append(np.sum(zc * n, axis=1, keepdims=True))          # sigma (1)
  a = np.concatenate(rows, axis=1)
  b = np.sum((y - z) * n, axis=1)
  x = np.linalg.solve(a.T @ a + 1e-12 * np.eye(a.shape[1]), a.T @ b)    # 6-7 unknowns: normal equations
  rot = rotation_from_vector(x[:3])
  s = 1.0 + (float(x[6]) if scale else 0.0)
  return Similarity(s, rot, c + x[3:6] - s * c @ rot.T)


def icp(source_vertices, target_points, *, source_triangles=None, init: Optional[Similarity] = None,
        scale: bool = True, method: Literal["point_to_plane", "point_to_point"] = "point_to_plane",
        max_iterations: int = 50, tolerance: float = 1e-6, trim: float = 3.0,
        max_points: int = 5000, seed: int = 0, patience: int = 4) -> IcpResult:
  """Iterative closest point aligning a source mesh (or cloud) to target points, isotropic scale.

  source_vertices [V, 3], source_triangles [F, 3] or None (then correspondences are the nearest
  source vertices and only point_to_point applies), target_points [M, 3]. Each iteration matches
  every target point to the closest point of the transformed source surface; pairs farther than
  `trim` x the median pair distance are left out of the fit (they lie past the source's extent, e.g.
  where a scan crop reaches beyond the reconstruction). The update is either the Umeyama fit of the
  kept pairs (point_to_point) or a Gauss-Newton step on the distances to the source's tangent planes
  (point_to_plane, which converges in a few iterations where point-to-point crawls along the
  surface). Stops when the update moves no point by more than `tolerance` x the target's extent,
  when the RMSE has not improved (relative `tolerance`) for `patience` iterations (then the best
  transform is returned), or after `max_iterations`. At most `max_points` target points (a fixed
  random subset, `seed`) are used; the caller measures errors on all of them.
  """
  src = np.asarray(source_vertices, np.float64)
  tgt = np.asarray(target_points, np.float64)
  if tgt.ndim != 2 or tgt.shape[1] != 3 or len(tgt) < 7:
    raise ValueError(f"icp: target points must be [M >= 7, 3], got {tgt.shape}")
  if method not in ("point_to_plane", "point_to_point"):
    raise ValueError(f"icp: method must be point_to_plane or point_to_point, got {method!r}")
  if source_triangles is None:
    method = "point_to_point"
  if len(tgt) > max_points:
    tgt = tgt[np.random.default_rng(seed).choice(len(tgt), max_points, replace=False)]
  extent = float(np.linalg.norm(tgt.max(0) - tgt.min(0)))
  search = MeshSearch(src, source_triangles)
  face_normals = None
  if method == "point_to_plane":
    face_normals = np.cross(src[search.triangles[:, 1]] - src[search.triangles[:, 0]],
                            src[search.triangles[:, 2]] - src[search.triangles[:, 0]])
    face_normals /= np.maximum(np.linalg.norm(face_normals, axis=1, keepdims=True), 1e-300)
  transform = init if init is not None else Similarity.identity()
  rmse, keep, converged, it = np.inf, np.ones(len(tgt), bool), False, 0
  best, stalled = (np.inf, transform, 1.0), 0
  for it in range(1, max_iterations + 1):
    # Search in the source's own frame (its structures are built once): map targets back, match.
    closest_src, _, tri = search.closest(transform.inverse().apply(tgt))
    matched = transform.apply(closest_src)
    dist = np.linalg.norm(matched - tgt, axis=1)
    keep = dist <= max(trim * float(np.median(dist)), 1e-12 * extent)
    if keep.sum() < 7:
      keep = np.ones(len(tgt), bool)
    rmse = float(np.sqrt(np.mean(dist[keep] ** 2)))
    # Between different shapes the matches can cycle among nearby triangles in steps far below
    # any measurable error: stop when the RMSE has not improved for `patience` iterations.
    if rmse < best[0] * (1.0 - tolerance):
      best, stalled = (rmse, transform, float(keep.mean())), 0
    else:
      stalled += 1
      if stalled >= patience:
        converged = True
        break
    if method == "point_to_plane":
      normals = transform.apply_vectors(face_normals[tri[keep]])
      new = _point_to_plane_step(matched[keep], tgt[keep], normals, scale).compose(transform)
    else:
      new = fit_similarity(closest_src[keep], tgt[keep], scale=scale)
    moved = float(np.max(np.linalg.norm(new.apply(closest_src) - matched, axis=1)))
    transform = new
    if moved <= tolerance * extent:
      converged = True
      break
  if converged and stalled >= patience:
    rmse, transform, fraction = best
    return IcpResult(transform, rmse, it, converged, fraction)
  return IcpResult(transform, rmse, it, converged, float(keep.mean()))
