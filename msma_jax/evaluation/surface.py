"""Nearest points on a triangle mesh or a point cloud, through maintained libraries.

Closest points on a surface come from trimesh's `proximity.closest_point` (exact point-triangle
distances over the candidates of an R-tree of triangle boxes; needs the `rtree` package); nearest
vertices come from scipy's cKDTree. NumPy float64 on the host.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def vertex_normals(vertices, triangles) -> np.ndarray:
  """[V, 3] unit area-weighted vertex normals (outward for counter-clockwise triangles); vertices
  used by no triangle get 0."""
  v = np.asarray(vertices, np.float64)
  f = np.asarray(triangles, np.int64)
  fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])   # length = 2 · area
  n = np.zeros_like(v)
  for k in range(3):
    np.add.at(n, f[:, k], fn)
  length = np.linalg.norm(n, axis=1, keepdims=True)
  return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


class MeshSearch:
  """Closest-point queries against a fixed mesh (or a point cloud when triangles is None).

  vertices [V, 3]; triangles [F, 3] int or None. Build once, query many times: ICP queries the same
  source mesh every iteration, with the targets mapped into its frame, so the search structures are
  built only once.
  """

  def __init__(self, vertices, triangles=None):
    self.vertices = np.asarray(vertices, np.float64)
    if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or len(self.vertices) == 0:
      raise ValueError(f"MeshSearch: vertices must be [V, 3] with V > 0, got {self.vertices.shape}")
    self.tree = cKDTree(self.vertices)
    self.triangles = None
    self._mesh = None
    if triangles is not None:
      f = np.asarray(triangles, np.int64)
      if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0 or f.min() < 0 or f.max() >= len(self.vertices):
        raise ValueError(f"MeshSearch: triangles must be [F, 3] indices into {len(self.vertices)} "
                         f"vertices, got shape {f.shape}")
      import trimesh
      self.triangles = f
      self._mesh = trimesh.Trimesh(self.vertices, f, process=False, validate=False)

  def nearest_vertices(self, points) -> tuple[np.ndarray, np.ndarray]:
    """(distances [M], vertex indices [M]) of the nearest vertex to each point [M, 3]."""
    return self.tree.query(_points(points, "MeshSearch.nearest_vertices"))

  def closest(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(closest points [M, 3], distances [M], triangle ids [M]) on the surface for points [M, 3].

    Without triangles: the nearest vertices, their distances and vertex ids.
    """
    p = _points(points, "MeshSearch.closest")
    if self._mesh is None:
      d, i = self.tree.query(p)
      return self.vertices[i], d, i
    import trimesh
    closest, distance, triangle = trimesh.proximity.closest_point(self._mesh, p)
    return np.asarray(closest, np.float64), np.asarray(distance, np.float64), np.asarray(triangle)


def _points(points, who: str) -> np.ndarray:
  p = np.asarray(points, np.float64)
  if p.ndim != 2 or p.shape[1] != 3:
    raise ValueError(f"{who}: points must be [M, 3], got {p.shape}")
  return p
