"""Brute-force reference rasterizer for tests: every pixel against every triangle, float64 NumPy.

Independent of msma_jax.render: homogeneous barycentrics come from `np.linalg.solve` on the 3x3
system [x; y; w] λ = (x_ndc, y_ndc, 1) per triangle, there are no bounding boxes, levels or chunks.
"""
import numpy as np


def reference_rasterize(clip, triangles, image_size, cull_backfaces=False):
  """clip [V, 4], triangles [F, 3] -> (ids [H, W], bary [H, W, 3], depth [H, W], lam_all)."""
  h, w = image_size
  clip = np.asarray(clip, np.float64)
  tri = np.asarray(triangles, np.int64)
  ys, xs = np.mgrid[0:h, 0:w]
  px = 2.0 * (xs + 0.5) / w - 1.0
  py = 1.0 - 2.0 * (ys + 0.5) / h
  p = np.stack([px, py, np.ones_like(px)], -1).reshape(-1, 3)        # [P, 3]
  best_z = np.full(h * w, np.inf)
  best_id = np.full(h * w, -1)
  best_bary = np.zeros((h * w, 3))
  for f, t in enumerate(tri):
    m = clip[t][:, [0, 1, 3]].T                                          # columns = vertices
    det = np.linalg.det(m)
    if not np.isfinite(det) or abs(det) < 1e-300:
      continue
    if cull_backfaces and det <= 0:
      continue
    lam = np.linalg.solve(m, p.T).T                                      # [P, 3]
    z = lam @ clip[t][:, 2]
    inside = np.all(lam >= 0, axis=1) & (lam.sum(1) > 0) & (z >= -1) & (z <= 1)
    better = inside & ((z < best_z) | ((z == best_z) & (f < best_id)))
    best_z[better] = z[better]
    best_id[better] = f
    best_bary[better] = lam[better] / lam[better].sum(1, keepdims=True)
  depth = np.where(best_id >= 0, (best_z + 1) / 2, 1.0)
  return best_id.reshape(h, w), best_bary.reshape(h, w, 3), depth.reshape(h, w)


def min_edge_distance_px(clip, triangles, tri_id, image_size):
  """For each pixel, the distance (pixels) from its centre to the nearest edge of triangle tri_id."""
  h, w = image_size
  clip = np.asarray(clip, np.float64)
  ys, xs = np.mgrid[0:h, 0:w]
  out = np.full((h, w), np.inf)
  for y, x in zip(*np.nonzero(tri_id >= 0)):
    v = clip[triangles[tri_id[y, x]]]
    sx = (v[:, 0] / v[:, 3] + 1) * w / 2
    sy = (1 - v[:, 1] / v[:, 3]) * h / 2
    c = np.array([x + 0.5, y + 0.5])
    d = []
    for i in range(3):
      a, b = np.array([sx[i], sy[i]]), np.array([sx[(i + 1) % 3], sy[(i + 1) % 3]])
      t = np.clip(np.dot(c - a, b - a) / max(np.dot(b - a, b - a), 1e-30), 0, 1)
      d.append(np.linalg.norm(a + t * (b - a) - c))
    out[y, x] = min(d)
  return out
