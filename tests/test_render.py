"""Rasterizer, interpolation, antialiasing and render_face against a brute-force reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multidevice import run_with_devices
from render_reference import min_edge_distance_px, reference_rasterize
from msma_jax import camera as cam
from msma_jax.render import antialias, interpolate, rasterize, render_face, triangle_neighbors


def perspective_clip(points, f=2.0, n=0.5, far=20.0):
  """Eye-space points [.., 3] (camera looking down -z) -> OpenGL clip coords."""
  x, y, z = points[..., 0], points[..., 1], points[..., 2]
  return np.stack([f * x, f * y, -(far + n) / (far - n) * z - 2 * far * n / (far - n), -z], -1)


def random_scene(rng, n_tri=40, spread=1.5):
  """Random overlapping triangles at random depths in front of the camera (some large)."""
  centres = rng.uniform(-spread, spread, (n_tri, 1, 3)) * np.array([1, 1, 0]) + np.array(
      [0, 0, -4.0])
  size = rng.uniform(0.05, 1.2, (n_tri, 1, 1))
  pts = centres + size * rng.normal(size=(n_tri, 3, 3)) * np.array([1, 1, 0.5])
  return perspective_clip(pts.reshape(-1, 3)), np.arange(3 * n_tri).reshape(-1, 3)


def assert_matches_reference(clip, tris, size, cull=False, min_agree=0.999, chunk=None,
                             depth_atol=0.0):
  clip = np.asarray(clip, np.float32)          # the reference sees exactly the rasterizer's inputs
  kw = {} if chunk is None else {"chunk_fragments": chunk}
  frags = jax.jit(lambda c: rasterize(c, jnp.asarray(tris), size, cull_backfaces=cull, **kw))(
      jnp.asarray(clip, jnp.float32)[None])
  ids = np.asarray(frags.triangle_id[0])
  ref_ids, ref_bary, ref_depth = reference_rasterize(clip, tris, size, cull)
  agree = ids == ref_ids
  assert agree.mean() >= min_agree, f"triangle ids agree on only {agree.mean():.5f} of pixels"
  if not agree.all():   # disagreements only where a pixel centre lies on an edge (shared edges)
    d = np.minimum(min_edge_distance_px(clip, tris, np.where(agree, -1, ids), size),
                   min_edge_distance_px(clip, tris, np.where(agree, -1, ref_ids), size))
    assert np.all(d[~agree] < 1e-3), f"non-edge disagreement, distances {d[~agree]}"
  cov = agree & (ids >= 0)
  np.testing.assert_allclose(np.asarray(frags.barycentric[0])[cov], ref_bary[cov], atol=1e-4)
  np.testing.assert_allclose(np.asarray(frags.depth[0])[cov], ref_depth[cov], rtol=1e-5,
                             atol=depth_atol)
  assert np.all(np.asarray(frags.barycentric[0])[ids < 0] == 0)
  assert np.all(np.asarray(frags.depth[0])[ids < 0] == 1)
  return ids, ref_ids


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", [(48, 64), (37, 29)])
def test_random_scenes_match_reference(seed, size):
  clip, tris = random_scene(np.random.default_rng(seed))
  ids, _ = assert_matches_reference(clip, tris, size)
  assert (ids >= 0).mean() > 0.3 and len(np.unique(ids)) > 10


def test_small_chunks_process_every_triangle():
  """Capacities far below the scene's needs: everything is still rasterized (chunks loop)."""
  clip, tris = random_scene(np.random.default_rng(3), n_tri=60)
  assert_matches_reference(clip, tris, (40, 40), chunk=16)


def test_backface_culling():
  clip, tris = random_scene(np.random.default_rng(4))
  ids, _ = assert_matches_reference(clip, tris, (40, 52), cull=True)
  c = clip[tris][..., [0, 1, 3]]
  front = np.linalg.det(np.transpose(c, (0, 2, 1))) > 0
  assert np.all(front[ids[ids >= 0]])
  assert (~front).sum() > 5


def test_embedded_face_matches_reference(embedded):
  camera = cam.Camera.for_face_model(embedded, (72, 64))
  coeffs = embedded.zero_coefficients((1,)).replace(angle=jnp.array([[0.1, 0.5, -0.1]]))
  world = cam.rigid_transform(embedded.shape(coeffs), coeffs.angle, coeffs.trans)
  clip = np.asarray(cam.to_clip(world, camera))[0]
  ids, _ = assert_matches_reference(clip, np.asarray(embedded.triangles), (72, 64), cull=True)
  assert (ids >= 0).mean() > 0.3


def test_empty_offscreen_degenerate_behind_camera_and_nan():
  """One scene holding every kind of triangle that must draw nothing, plus one that must draw."""
  size = (24, 32)
  pts = np.concatenate([
      perspective_clip(np.array([[-1.0, -1, -4], [1, -1, -4], [0, 1, -4]])),   # 0: visible
      perspective_clip(np.array([[5.0, 5, -4], [6, 5, -4], [5, 6, -4]])),      # 1: off-screen
      perspective_clip(np.array([[-1.0, -1, 3], [1, -1, 3], [0, 1, 3]])),      # 2: behind (w < 0)
      perspective_clip(np.array([[-1.0, 0, -4], [0, 0, -4], [1, 0, -4]])),     # 3: collinear
      perspective_clip(np.array([[0.2, 0.2, -4]] * 3)),                        # 4: a point
      perspective_clip(np.array([[-1.0, -1, -30], [1, -1, -30], [0, 1, -30]])),  # 5: beyond far
      np.full((3, 4), np.nan),                                                 # 6: NaN
  ])
  tris = np.arange(len(pts)).reshape(-1, 3)
  frags = jax.jit(lambda c: rasterize(c, jnp.asarray(tris), size))(
      jnp.asarray(pts, jnp.float32)[None])
  assert set(np.unique(np.asarray(frags.triangle_id))) == {-1, 0}
  assert np.all(np.isfinite(np.asarray(frags.barycentric)))
  empty = rasterize(jnp.zeros((2, 0, 4)), jnp.zeros((0, 3), jnp.int32), size)
  assert empty.triangle_id.shape == (2, 24, 32) and np.all(np.asarray(empty.triangle_id) == -1)


def test_near_plane_crossing_triangles():
  """A floor that runs from behind the camera to far away: only the part beyond the near plane
  is drawn, exactly where the reference (per-pixel z_ndc >= -1) says."""
  pts = np.array([[-3.0, -1, 2], [3, -1, 2], [0, -1, -12],            # crosses w = 0 and near
                  [-0.5, -0.5, -0.2], [0.5, -0.5, -3], [0, 0.5, -0.3]])  # crosses the near plane
  clip = perspective_clip(pts)
  tris = np.arange(6).reshape(2, 3)
  # Window depth of a triangle whose vertices straddle the near plane is a float32 sum of terms of
  # opposite sign (~1 each): near depth 0 its absolute precision is ~1e-7, hence the atol.
  ids, _ = assert_matches_reference(clip, tris, (40, 40), depth_atol=2e-7)
  assert {0, 1} <= set(np.unique(ids))
  assert_matches_reference(clip, tris, (40, 40), chunk=8, depth_atol=2e-7)


def test_jit_vmap_and_batch_modes_agree():
  clip, tris = random_scene(np.random.default_rng(5))
  c = jnp.asarray(np.stack([clip, clip * np.array([1, -1, 1, 1])]), jnp.float32)
  t = jnp.asarray(tris)
  looped = jax.jit(lambda c: rasterize(c, t, (32, 32), batch_mode="map"))(c)
  vmapped = jax.jit(lambda c: rasterize(c, t, (32, 32), batch_mode="vmap"))(c)
  single = jax.jit(jax.vmap(lambda x: rasterize(x[None], t, (32, 32))))(c)   # user-level vmap
  for other in (vmapped, jax.tree.map(lambda a: a[:, 0], single)):
    np.testing.assert_array_equal(np.asarray(other.triangle_id), np.asarray(looped.triangle_id))
    # Same ids; barycentrics equal up to float32 rounding (the compiled programs contract
    # multiply-adds differently; both are within 2e-5 of the float64 reference).
    np.testing.assert_allclose(np.asarray(other.barycentric), np.asarray(looped.barycentric),
                               atol=1e-5)
  assert len(np.unique(np.asarray(looped.triangle_id[1]))) > 10


def test_bad_shapes():
  with pytest.raises(ValueError, match=r"clip_vertices must be \[B, V, 4\]"):
    rasterize(jnp.zeros((4, 3)), jnp.zeros((1, 3), jnp.int32), (8, 8))
  with pytest.raises(ValueError, match=r"triangles must be \[F, 3\]"):
    rasterize(jnp.zeros((1, 4, 4)), jnp.zeros((3,), jnp.int32), (8, 8))


# ---- interpolation and gradients -------------------------------------------------------------------

def _simple_scene():
  pts = np.array([[-0.8, -0.7, -3.0], [0.9, -0.6, -3.5], [0.1, 0.9, -2.5],
                  [-0.2, -0.9, -2.0], [0.6, 0.2, -2.2], [-0.6, 0.4, -2.1]])
  return perspective_clip(pts).astype(np.float32), np.array([[0, 1, 2], [3, 4, 5]])


def test_interpolate_matches_reference_barycentrics():
  clip, tris = _simple_scene()
  attrs = np.random.default_rng(0).uniform(size=(6, 4)).astype(np.float32)
  frags = jax.jit(lambda c: rasterize(c, jnp.asarray(tris), (30, 30)))(jnp.asarray(clip)[None])
  out = np.asarray(interpolate(jnp.asarray(attrs), frags, jnp.asarray(tris)))[0]
  ref_ids, ref_bary, _ = reference_rasterize(clip, tris, (30, 30))
  ref = np.einsum("hwk,hwkc->hwc", ref_bary, attrs[tris[np.maximum(ref_ids, 0)]])
  ref[ref_ids < 0] = 0
  np.testing.assert_allclose(out, ref, atol=1e-4)


def test_attribute_and_vertex_gradients_match_finite_differences():
  clip, tris = _simple_scene()
  rng = np.random.default_rng(1)
  attrs = jnp.asarray(rng.uniform(size=(1, 6, 3)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(1, 30, 30, 3)), jnp.float32)
  tris_j = jnp.asarray(tris)

  @jax.jit
  def loss(clip, attrs):
    frags = rasterize(clip, tris_j, (30, 30))
    return jnp.sum(interpolate(attrs, frags, tris_j) * weights)

  ids_of = jax.jit(lambda c: rasterize(c, tris_j, (30, 30)).triangle_id)
  c = jnp.asarray(clip)[None]
  g_clip, g_attr = jax.jit(jax.grad(loss, argnums=(0, 1)))(c, attrs)
  # Attributes: the loss is linear in them, so central differences are exact up to rounding.
  for v, ch in [(0, 0), (4, 2), (5, 1)]:
    e = jnp.zeros_like(attrs).at[0, v, ch].set(1e-2)
    fd = (loss(c, attrs + e) - loss(c, attrs - e)) / 2e-2
    np.testing.assert_allclose(float(g_attr[0, v, ch]), float(fd), rtol=1e-3, atol=1e-3)
  # Vertex positions (through barycentrics), steps small enough that no pixel changes triangle.
  base_ids = np.asarray(ids_of(c))
  checked = 0
  for v in range(6):
    for k in (0, 1, 3):
      h = 1e-3
      e = jnp.zeros_like(c).at[0, v, k].set(h)
      same = all(np.array_equal(np.asarray(ids_of(c + s * e)), base_ids) for s in (-1, 1))
      if not same:
        continue
      fd = (loss(c + e, attrs) - loss(c - e, attrs)) / (2 * h)
      np.testing.assert_allclose(float(g_clip[0, v, k]), float(fd), rtol=2e-2, atol=2e-2)
      checked += 1
  assert checked >= 12


# ---- antialiasing / silhouette gradients -----------------------------------------------------------

def _ortho_clip(px_xy, size, z=0.0):
  """Pixel-space 2D points [N, 2] -> clip coordinates with w = 1 (orthographic)."""
  h, w = size
  x = 2 * px_xy[:, 0] / w - 1
  y = 1 - 2 * px_xy[:, 1] / h
  return np.stack([x, y, np.full_like(x, z), np.ones_like(x)], -1).astype(np.float32)


def _aa_mask_sum(clip, tris, size, neighbors):
  frags = rasterize(clip, tris, size)
  cov = frags.mask[..., None].astype(jnp.float32)
  return jnp.sum(antialias(cov, frags, clip, tris, neighbors))


def test_silhouette_gradient_equals_area_derivative():
  """d(Σ antialiased coverage)/d(vertex) ≈ d(triangle area)/d(vertex), in pixels."""
  size = (64, 64)
  p = np.array([[10.3, 50.2], [54.1, 44.7], [25.6, 8.9]])        # CCW on screen is CW in pixels
  d1, d2 = p[1] - p[0], p[2] - p[0]
  p = p[[0, 2, 1]] if d1[0] * d2[1] - d1[1] * d2[0] > 0 else p
  tris = jnp.array([[0, 1, 2]])
  nb = jnp.asarray(triangle_neighbors(np.array([[0, 1, 2]])))
  clip = jnp.asarray(_ortho_clip(p, size))[None]
  g = np.asarray(jax.jit(jax.grad(_aa_mask_sum), static_argnums=2)(clip, tris, size, nb))[0]
  g_px = np.stack([g[:, 0] * 2 / size[1], -g[:, 1] * 2 / size[0]], -1)   # chain rule to pixels
  # Area derivative: d(area)/d(p_i) = 0.5 · perpendicular of the opposite edge (outward).
  area_grad = []
  for i in range(3):
    a, b = p[(i + 1) % 3], p[(i + 2) % 3]
    e = b - a
    n = np.array([e[1], -e[0]]) * 0.5
    n = n if np.dot(n, p[i] - a) > 0 else -n
    area_grad.append(n)
  area_grad = np.array(area_grad)
  np.testing.assert_allclose(g_px, area_grad, rtol=0.08, atol=1.0)


def test_occluding_edge_gradient_sign_and_magnitude():
  """A near square partly covering a far square: moving the near square's right edge to the
  right increases Σ(image) by (colour difference) x (edge length) per pixel moved."""
  size = (40, 40)
  near = np.array([[8.0, 8.0], [22.3, 8.0], [22.3, 30.0], [8.0, 30.0]])
  far = np.array([[4.0, 4.0], [36.0, 4.0], [36.0, 36.0], [4.0, 36.0]])
  clip = np.concatenate([_ortho_clip(near, size, -0.5), _ortho_clip(far, size, 0.5)])
  # CCW on screen (y up) = clockwise in pixel coordinates (y down).
  tris = jnp.array([[0, 3, 2], [0, 2, 1], [4, 7, 6], [4, 6, 5]])
  nb = jnp.asarray(triangle_neighbors(np.asarray(tris)))
  colour = jnp.array([1.0, 1, 1, 1, 0, 0, 0, 0])[:, None]

  @jax.jit
  def loss(c):
    frags = rasterize(c, tris, size)
    img = interpolate(colour, frags, tris)
    return jnp.sum(antialias(img, frags, c, tris, nb))

  c = jnp.asarray(clip)[None]
  g = np.asarray(jax.jit(jax.grad(loss))(c))[0]
  # Right edge = vertices 1 and 2; d/dX_pixel = d/dx_clip · 2/W. Edge length 22 px, Δcolour 1.
  d_right = (g[1, 0] + g[2, 0]) * 2 / size[1]
  assert d_right == pytest.approx(22.0, rel=0.1)
  # Finite differences of the antialiased loss itself (edge moves 0.1 px, no pixel flips).
  h = 0.1 * 2 / size[1]
  e = jnp.zeros_like(c).at[0, 1, 0].set(h).at[0, 2, 0].set(h)
  fd = (loss(c + e) - loss(c - e)) / (2 * h)
  np.testing.assert_allclose(float(g[1, 0] + g[2, 0]), float(fd), rtol=1e-3)
  # The internal diagonal edge of the near square is not a silhouette: no spurious blending.
  assert np.abs(g[0, 1] + g[2, 1]) < 1e-3 * np.abs(g).max() * 100


# ---- render_face -------------------------------------------------------------------------------------

def test_render_face_outputs(embedded):
  camera = cam.Camera.for_face_model(embedded, (96, 80))
  coeffs = embedded.zero_coefficients((2,)).replace(angle=jnp.array([[0, 0, 0], [0, 0.6, 0.0]]))
  out = jax.jit(lambda c: render_face(embedded, c, camera, background=jnp.ones(3),
                                      with_depth=True, with_normals=True))(coeffs)
  assert out.image.shape == (2, 96, 80, 3) and out.mask.shape == (2, 96, 80)
  assert out.landmarks_2d.shape == (2, 68, 2) and out.depth.shape == (2, 96, 80)
  m = np.asarray(out.fragments.mask)
  img = np.asarray(out.image)
  assert 0.25 < m[0].mean() < 0.8
  np.testing.assert_allclose(img[0][~m[0]][:, :], 1.0, atol=0.51)      # background (AA at edges)
  d = np.asarray(out.depth)[0][m[0]]
  assert np.all((d > 900) & (d < 1100))                                  # mm from the camera
  nrm = np.asarray(out.normals)[0][m[0]]
  np.testing.assert_allclose(np.linalg.norm(nrm, axis=-1), 1, atol=1e-4)
  assert np.mean(nrm[:, 2]) > 0.6                                        # facing the camera
  # Landmarks inside the rendered face.
  lm = np.asarray(out.landmarks_2d[0]).round().astype(int)
  assert m[0][lm[17:, 1], lm[17:, 0]].all()
  # Interior colour equals the SH-shaded albedo at the pixel (mean face, ambient light only).
  centre = img[0][48, 40]
  assert np.all(centre > 0.2) and np.all(centre < 0.8)


def test_render_face_gradients_reach_every_coefficient_group(embedded):
  camera = cam.Camera.for_face_model(embedded, 64)
  coeffs = embedded.zero_coefficients((1,))
  target = jnp.full((1, 64, 64, 3), 0.5)

  def loss(c):
    out = render_face(embedded, c, camera)
    return jnp.mean((out.image - target) ** 2) + jnp.mean(out.mask)

  g = jax.jit(jax.grad(loss))(coeffs)
  for name in ("id", "exp", "tex", "angle", "gamma", "trans"):
    a = np.asarray(getattr(g, name))
    assert np.all(np.isfinite(a)) and np.abs(a).sum() > 0, name


def test_sharded_render_face_matches_single_device():
  """render_face inside a jit whose batch axis is split over 8 (virtual CPU) devices."""
  out = run_with_devices("""
      import jax, jax.numpy as jnp, numpy as np
      from jax.sharding import NamedSharding, PartitionSpec as P
      from msma_jax import camera as cam
      from msma_jax.face_model import load_face_model
      from msma_jax.inference.demo import random_coefficients
      from msma_jax.render import RenderForms, render_face
      assert jax.device_count() == 8
      fm = load_face_model("embedded")
      camera = cam.Camera.for_face_model(fm, 48)
      coeffs = random_coefficients(fm, jax.random.key(1), 8)
      mesh = jax.make_mesh((8,), ("data",))
      batch = NamedSharding(mesh, P("data"))
      sharded = jax.device_put(coeffs, batch)
      for mode in ("vmap", "map"):
        def loss(c):
          o = render_face(fm, c, camera, forms=RenderForms(batch_mode=mode))
          return jnp.mean(o.image) + jnp.mean(o.mask), o
        ref_l, ref_o = jax.jit(loss)(coeffs)
        ref_g = jax.jit(jax.grad(lambda c: loss(c)[0]))(coeffs)
        with jax.set_mesh(mesh):
          l, o = jax.jit(loss, in_shardings=(batch,))(sharded)
          g = jax.jit(jax.grad(lambda c: loss(c)[0]), in_shardings=(batch,))(sharded)
        assert len(o.image.sharding.device_set) == 8, o.image.sharding
        np.testing.assert_array_equal(np.asarray(o.fragments.triangle_id),
                                      np.asarray(ref_o.fragments.triangle_id))
        np.testing.assert_allclose(np.asarray(o.image), np.asarray(ref_o.image), atol=1e-5)
        np.testing.assert_allclose(float(l), float(ref_l), rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
          np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
      print("OK")
  """)
  assert "OK" in out


def test_materialize_is_an_identity_with_identity_gradient():
  from msma_jax.render.rasterize import materialize
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
  f = lambda v: jnp.sum(jnp.sin(materialize((v * 2.0, v))[0]) * 3.0)
  np.testing.assert_array_equal(np.asarray(jax.jit(materialize)(x)), np.asarray(x))
  np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(f))(x)), 6.0 * np.cos(2.0 * np.asarray(x)),
                             rtol=1e-6)
  batched = jax.jit(jax.vmap(lambda v: materialize(v) + 1.0))(x)
  np.testing.assert_array_equal(np.asarray(batched), np.asarray(x) + 1.0)
