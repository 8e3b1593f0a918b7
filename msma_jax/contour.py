"""Dynamic contour correspondence: jaw landmarks that follow the silhouette of the posed face.

A 2D annotator (or detector) puts the 17 jaw points (iBUG 0-16) on the visible outline of the face.
A fixed vertex does that only for the pose it was chosen at: with the head turned by 40 degrees the
fixed vertex on the far cheek lies behind the outline, several pixels inside the face. Like the
3DMM fitters eos and 3DDFA ("landmark marching"), each jaw landmark here has a precomputed band of
candidate vertices across the cheek, and at a given pose the landmark is the candidate whose
projection lies outermost along the landmark's outward direction in the image -- the candidate on
the occluding contour.

Build time (numpy, once per face model): `contour_candidates(mean_shape, landmark_indices,
triangles)` -> [17, K] int32, stored as `FaceModel.contour_candidates` (the embedded assets carry
it; `scripts/add_contour_candidates.py` adds it to any project .npz).

Each band lies in the plane through the fixed vertex spanned by the depth axis (+z) and the jaw's
outward direction u in the frontal (x, y) plane (the normal of the frontal jaw polyline: sideways at
the temples, down at the chin). It runs over the surface inward from the fixed vertex while the
normal turns toward the camera, to where it is `INNER_DEG` from facing +z (the far-side outline at
yaw ~90 - INNER_DEG). The fixed vertex is its outer end: a frontal face and the near side of a
turned one keep the fixed vertices (which the embedded models place on the frontal outline), and
the near side does not slide back under the jaw or to the ear, where no annotator puts jaw points.

Run time (JAX): `jaw_contour_2d` picks, per jaw landmark, the candidate projecting outermost along
the outline's outward normal in the image (see there). The selection carries no gradient; the
chosen vertex's position does, so the landmark loss stays differentiable almost everywhere (it
jumps between neighbouring candidates as the pose changes, as a rendered outline does). `with_contour` replaces
the jaw points of [..., 68, 2] landmarks; a model without candidates keeps its fixed vertices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from msma_jax import camera as cam
from msma_jax import lighting

N_JAW = 17                 # iBUG 0-16
INNER_DEG = 20.0           # band's inner end: normal 20 deg from facing +z (outline at yaw ~70 deg)
MONOTONE_DEG = 15.0        # the walk along a band stops where the normal turns back by more
MAX_CANDIDATES = 48        # K at most (bands with more vertices are thinned evenly)
U_WEIGHT = 0.5             # weight of the rotated band direction in the outline normal (see below)
REACH = 0.5                # a band ends within 0.5 jaw widths (iBUG 0 to 16) of its fixed vertex


# ---- build time (numpy) -------------------------------------------------------------------------

def jaw_outward_directions(jaw: np.ndarray) -> np.ndarray:
  """[17, 3] unit outward directions in the (x, y) plane of the frontal jaw polyline [17, 3]."""
  xy = np.asarray(jaw, np.float64)[:, :2]
  tangent = np.gradient(xy, axis=0)                        # central differences, one-sided at ends
  normal = np.stack([tangent[:, 1], -tangent[:, 0]], -1)
  centre = xy.mean(axis=0)
  normal *= np.where(np.sum(normal * (xy - centre), -1) < 0, -1.0, 1.0)[:, None]
  normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
  return np.concatenate([normal, np.zeros((N_JAW, 1))], -1)


def contour_candidates(mean_shape: np.ndarray, landmark_indices: np.ndarray,
                       triangles: np.ndarray, *, inner_deg: float = INNER_DEG,
                       max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
  """[17, K] int32 candidate vertices per jaw landmark, ordered inward -> outward, the fixed vertex
  among them; rows shorter than K are padded by repeating their outermost vertex.

  mean_shape [V, 3] (y up, face toward +z), landmark_indices [68] (iBUG order), triangles [F, 3]
  (CCW from outside). See the module docstring for the band. It follows the curve where the plane
  cuts the mesh: from the mesh edges the plane crosses at the fixed vertex, across triangles (each
  crossed triangle links its two crossed edges), while the normal at the crossing is within the
  band's angles and the crossing within REACH jaw widths (iBUG 0 to 16) of the fixed vertex; each
  crossed edge contributes its endpoint nearer the plane.
  """
  v = np.asarray(mean_shape, np.float64)
  tri = np.asarray(triangles, np.int64)
  lm = np.asarray(landmark_indices, np.int64)
  normals = np.asarray(lighting.vertex_normals(jnp.asarray(v), jnp.asarray(tri)), np.float64)
  tri_edges = np.stack([tri[:, [1, 2]], tri[:, [2, 0]], tri[:, [0, 1]]], 1)       # [F, 3, 2]
  edges, tri_edge_id = np.unique(np.sort(tri_edges.reshape(-1, 2), axis=1), axis=0,
                                 return_inverse=True)
  tri_edge_id = tri_edge_id.reshape(-1, 3)
  half_edge = 0.5 * float(np.median(np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)))
  reach = REACH * float(np.linalg.norm(v[lm[0]] - v[lm[16]]))
  outward = jaw_outward_directions(v[lm[:N_JAW]])
  z = np.array([0.0, 0.0, 1.0])
  rows = []
  for k in range(N_JAW):
    fixed, u = int(lm[k]), outward[k]
    s = (v - v[fixed]) @ np.cross(u, z)                  # signed distance to the band's plane
    side = s >= 0.0
    a, b = edges[:, 0], edges[:, 1]
    crossed = side[a] != side[b]
    t = np.where(crossed, s[a] / np.where(crossed, s[a] - s[b], 1.0), 0.0)[:, None]
    point = v[a] + t * (v[b] - v[a])
    normal = normals[a] + t * (normals[b] - normals[a])
    alpha = np.degrees(np.arctan2(normal @ u, normal @ z))   # 0: faces +z, 90: faces along u
    along = (point - v[fixed]) @ u                          # < 0: inward of the fixed vertex
    ok = (crossed & (alpha >= inner_deg) & (np.linalg.norm(point - v[fixed], axis=1) <= reach))
    incident = (a == fixed) | (b == fixed)
    ok &= (along <= half_edge) | incident
    # crossed edges linked through the triangles they share (a crossed triangle has two)
    links: dict[int, list[int]] = {}
    for e0, e1, e2 in tri_edge_id[crossed[tri_edge_id].sum(1) == 2]:
      pair = [e for e in (e0, e1, e2) if crossed[e]]
      links.setdefault(pair[0], []).append(pair[1])
      links.setdefault(pair[1], []).append(pair[0])
    # walk the curve inward from the fixed vertex while the normal turns toward +z (monotonically,
    # within MONOTONE_DEG): the walk stops where the surface turns back (e.g. the side of the nose)
    start = [int(e) for e in np.nonzero(ok & incident)[0]]
    lo = {e: float(alpha[e]) for e in start}
    stack = list(start)
    while stack:
      p = stack.pop()
      for e in links.get(p, ()):
        if e in lo or not ok[e]:
          continue
        if alpha[e] > lo[p] + MONOTONE_DEG:
          continue
        lo[e] = min(lo[p], float(alpha[e]))
        stack.append(int(e))
    hit = np.array(sorted(lo), np.int64)
    ids = np.where(np.abs(s[a[hit]]) <= np.abs(s[b[hit]]), a[hit], b[hit]) if hit.size else hit
    ids = np.union1d(ids[(v[ids] - v[fixed]) @ u <= 0.0], [fixed])
    ids = ids[np.argsort((v[ids] - v[fixed]) @ u, kind="stable")]             # inward -> outward
    if ids.size > max_candidates:                  # thin evenly, keeping the fixed vertex
      pick = np.round(np.linspace(0, ids.size - 1, max_candidates)).astype(int)
      near = int(np.argmin(np.abs(pick - int(np.nonzero(ids == fixed)[0][0]))))
      pick[near] = int(np.nonzero(ids == fixed)[0][0])
      ids = ids[np.unique(pick)]
    rows.append(ids)
  width = max(r.size for r in rows)
  return np.stack([np.concatenate([r, np.repeat(r[-1:], width - r.size)]) for r in rows]
                  ).astype(np.int32)


# ---- run time (JAX) -----------------------------------------------------------------------------

def outward_directions(face_model) -> jax.Array:
  """[17, 3] model-space outward direction of each band (inner end -> fixed vertex, in (x, y))."""
  c = face_model.contour_candidates
  d = (face_model.mean_shape[c[:, -1]] - face_model.mean_shape[c[:, 0]]) * jnp.array([1.0, 1.0, 0.0])
  jaw = face_model.mean_shape[face_model.landmark_indices[:N_JAW]]   # one-vertex band: from the
  fallback = (jaw - jnp.mean(jaw, axis=0)) * jnp.array([1.0, 1.0, 0.0])   # jaw's centre
  d = jnp.where(jnp.sum(d * d, -1, keepdims=True) > 1e-12, d, fallback)
  return jax.lax.stop_gradient(d / jnp.linalg.norm(d, axis=-1, keepdims=True))


def candidate_normals(face_model) -> jax.Array:
  """[17, K, 3] unit normals of the candidates on the mean shape, model space (they only choose
  a candidate; identity and expression turn them by a few degrees, which moves the choice along
  a band that is grazing the view there, i.e. by a fraction of a pixel)."""
  normals = face_model.vertex_normals(face_model.mean_shape)
  return jax.lax.stop_gradient(jnp.take(normals, face_model.contour_candidates, axis=0))


def jaw_contour_2d(face_model, candidates_world: jax.Array, angles: jax.Array,
                   camera: cam.Camera) -> jax.Array:
  """[..., 17, 2] pixels: per jaw landmark, the candidate on the occluding contour.

  candidates_world [..., 17, K, 3] posed vertices of `face_model.contour_candidates`; angles
  [..., 3] the pose. The outline's outward normal in the image is the image-plane part of the
  surface normal where the band grazes the view ray: the candidates' rotated normals, weighted by
  exp(-(cos / 0.25)^2) of their angle to the ray, plus U_WEIGHT times the rotated band direction
  (which decides where no candidate grazes: the near side of a turned face). The chosen candidate projects outermost along it
  (robust to noisy vertex normals: a band crossing the contour folds over in the image there).
  """
  shape = candidates_world.shape
  flat = candidates_world.reshape(*shape[:-3], -1, 3)
  normals = cam.rotate_vectors(candidate_normals(face_model).reshape(-1, 3), angles)
  if camera.projection == "weak_perspective":
    ray = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], flat.dtype), flat.shape)
  else:
    ray = jnp.array([0.0, 0.0, camera.distance], flat.dtype) - flat
  cos = jnp.sum(normals * ray, -1) * jax.lax.rsqrt(jnp.sum(ray * ray, -1) + 1e-12)
  w = jnp.exp(-(cos / 0.25) ** 2)[..., None] + 1e-6
  in_image = normals[..., :2] * jnp.array([1.0, -1.0], flat.dtype)       # pixel axes: y down
  u = cam.rotate_vectors(outward_directions(face_model), angles)[..., :2]  # [..., 17, 2]
  d = (jnp.sum((w * in_image).reshape(*shape[:-1], 2), axis=-2)          # [..., 17, 2]
       + U_WEIGHT * u * jnp.array([1.0, -1.0], flat.dtype))
  d = jax.lax.stop_gradient(d * jax.lax.rsqrt(jnp.sum(d * d, -1, keepdims=True) + 1e-12))
  pts = cam.project(candidates_world, camera)                            # [..., 17, K, 2]
  best = jnp.argmax(jnp.sum(jax.lax.stop_gradient(pts) * d[..., None, :], -1), axis=-1)
  return jnp.take_along_axis(pts, best[..., None, None], axis=-2)[..., 0, :]


def with_contour(face_model, landmarks_2d: jax.Array, vertices_world: jax.Array,
                 angles: jax.Array, camera: cam.Camera) -> jax.Array:
  """landmarks_2d [..., 68, 2] with the jaw points moved to the silhouette (`jaw_contour_2d`);
  vertices_world [..., V, 3] posed vertices. Unchanged when the model has no candidates."""
  if face_model.contour_candidates is None:
    return landmarks_2d
  c = face_model.contour_candidates
  cand = jnp.take(vertices_world, c.reshape(-1), axis=-2)
  cand = cand.reshape(*vertices_world.shape[:-2], *c.shape, 3)
  return landmarks_2d.at[..., :N_JAW, :].set(jaw_contour_2d(face_model, cand, angles, camera))
