"""Camera and lighting against independent references (scipy rotations, hand-computed SH values)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from msma_jax import camera as cam
from msma_jax import lighting
from msma_jax.face_model import CameraDefaults


def test_rotations_are_orthonormal_with_det_one(rng):
  angles = jnp.asarray(rng.uniform(-math.pi, math.pi, (64, 3)), jnp.float32)
  r = np.asarray(cam.euler_to_rotation(angles), np.float64)
  np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape),
                             atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-6)


def test_rotation_order_is_rz_ry_rx(rng):
  angles = rng.uniform(-1.5, 1.5, (16, 3))
  r = np.asarray(cam.euler_to_rotation(jnp.asarray(angles, jnp.float32)))
  # Extrinsic x, then y, then z == Rz·Ry·Rx.
  ref = Rotation.from_euler("xyz", angles).as_matrix()
  np.testing.assert_allclose(r, ref, atol=1e-6)
  # Explicit composition of single-axis rotations.
  a = jnp.asarray(angles[0], jnp.float32)
  rx = cam.euler_to_rotation(a * jnp.array([1.0, 0, 0]))
  ry = cam.euler_to_rotation(a * jnp.array([0, 1.0, 0]))
  rz = cam.euler_to_rotation(a * jnp.array([0, 0, 1.0]))
  np.testing.assert_allclose(np.asarray(rz @ ry @ rx), r[0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(cam.rotation_to_euler(jnp.asarray(r))), angles, atol=1e-5)


def test_positive_yaw_turns_the_nose_toward_plus_x():
  nose = jnp.array([[0.0, 0.0, 1.0]])
  out = cam.rigid_transform(nose, jnp.array([0.0, 0.3, 0.0]), jnp.zeros(3))
  assert float(out[0, 0]) == pytest.approx(math.sin(0.3), abs=1e-6)


def _camera(size=(224, 224), projection="perspective"):
  return cam.Camera(focal=1015.0, principal=(size[1] / 2, size[0] / 2), distance=10.0,
                    image_size=size, near=5.0, far=15.0, projection=projection)


def test_projection_pixel_convention():
  c = _camera()
  px = np.asarray(cam.project(jnp.array([[0.0, 0, 0], [0.1, 0.2, 1.0]]), c))
  np.testing.assert_allclose(px[0], [112.0, 112.0])         # optical axis: image centre
  np.testing.assert_allclose(px[1], [112 + 1015 * 0.1 / 9, 112 - 1015 * 0.2 / 9], rtol=1e-6)


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
@pytest.mark.parametrize("size", [(224, 224), (120, 200)])
def test_clip_space_agrees_with_projection(rng, projection, size):
  c = _camera(size, projection)
  pts = jnp.asarray(rng.uniform(-1, 1, (50, 3)), jnp.float32)
  clip = cam.to_clip(pts, c)
  np.testing.assert_allclose(np.asarray(cam.clip_to_pixels(clip, size)),
                             np.asarray(cam.project(pts, c)), rtol=1e-5, atol=1e-3)
  ndc_z = np.asarray(clip[:, 2] / clip[:, 3])
  assert np.all(np.abs(ndc_z) < 1)
  d = np.asarray(cam.depth(pts, c))
  assert np.all(np.diff(ndc_z[np.argsort(d)]) > 0)         # z grows with distance
  # Near and far planes map to -1 and +1.
  if projection == "perspective":
    ends = cam.to_clip(jnp.array([[0, 0, 10.0 - 5.0], [0, 0, 10.0 - 15.0]]), c)
    np.testing.assert_allclose(np.asarray(ends[:, 2] / ends[:, 3]), [-1, 1], atol=1e-6)


def test_weak_perspective_matches_perspective_at_origin_depth():
  p = jnp.array([[0.05, -0.07, 0.0]])
  a = cam.project(p, _camera())
  b = cam.project(p, _camera(projection="weak_perspective"))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_camera_for_face_model_scales_with_image(embedded):
  c = cam.Camera.for_face_model(embedded, 448)
  assert c.focal == 2030.0 and c.principal == (224.0, 224.0) and c.distance == 1000.0
  assert embedded.camera == CameraDefaults(1015.0, 112.0, 1000.0, 500.0, 1500.0)


# ---- lighting -------------------------------------------------------------------------------------

# Closed forms: a0c0 = sqrt(pi)/2, a1c1 = sqrt(pi), a2c2 = (2pi/sqrt8)(3 sqrt5/sqrt(12pi)) = 1.5 sqrt(5pi/6).
A0C0, A1C1, A2C2 = 0.8862269254527580, 1.7724538509055159, 2.4270323906946243


def test_sh_constants():
  assert lighting.SH_A[0] * lighting.SH_C[0] == pytest.approx(A0C0)
  assert lighting.SH_A[1] * lighting.SH_C[1] == pytest.approx(A1C1)    # = sqrt(pi)
  assert lighting.SH_A[2] * lighting.SH_C[2] == pytest.approx(A2C2)


def test_sh_basis_of_known_normals():
  s = 1 / math.sqrt(2)
  n = jnp.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0], [s, s, 0]])
  y = np.asarray(lighting.sh_basis(n))
  c6 = 0.5 * A2C2 / math.sqrt(3)
  np.testing.assert_allclose(y[0], [A0C0, 0, A1C1, 0, 0, 0, 2 * c6, 0, 0], atol=1e-6)
  np.testing.assert_allclose(y[1], [A0C0, 0, 0, -A1C1, 0, 0, -c6, 0, 0.5 * A2C2], atol=1e-6)
  np.testing.assert_allclose(y[2], [A0C0, -A1C1, 0, 0, 0, 0, -c6, 0, -0.5 * A2C2], atol=1e-6)
  np.testing.assert_allclose(y[3], [A0C0, -A1C1 * s, 0, -A1C1 * s, A2C2 * 0.5, 0, -c6, 0, 0],
                             atol=1e-6)


def test_shading_of_known_normals():
  normals = jnp.array([[[0, 0, 1.0], [0, 1.0, 0]]])
  albedo = jnp.array([[[0.5, 0.6, 0.7], [1.0, 1.0, 1.0]]])
  gamma = jnp.zeros((1, 27))
  out = np.asarray(lighting.shade(albedo, normals, gamma))
  c6 = 0.5 * A2C2 / math.sqrt(3)
  np.testing.assert_allclose(out[0, 0], 0.8 * A0C0 * np.array([0.5, 0.6, 0.7]), rtol=1e-6)
  # Red channel lit from above through band 1 (-a1c1·y), blue through band 2 (a1c1·z).
  gamma = gamma.at[0, 1].set(-0.5).at[0, 18 + 2].set(0.3).at[0, 9 + 6].set(0.2)
  out = np.asarray(lighting.shade(albedo, normals, gamma))
  np.testing.assert_allclose(out[0, 1, 0], 0.8 * A0C0 + 0.5 * A1C1, rtol=1e-6)      # normal +y
  np.testing.assert_allclose(out[0, 0, 2], 0.7 * (0.8 * A0C0 + 0.3 * A1C1), rtol=1e-6)
  np.testing.assert_allclose(out[0, 0, 1], 0.6 * (0.8 * A0C0 + 0.2 * 2 * c6), rtol=1e-6)
  np.testing.assert_allclose(out[0, 1, 1], 0.8 * A0C0 - 0.2 * c6, rtol=1e-6)


def test_vertex_normals_flat_and_sphere():
  from bfm_fixtures import grid_mesh
  v, f = grid_mesh(6)
  flat = v * np.array([1, 1, 0])
  n = np.asarray(lighting.vertex_normals(jnp.asarray(flat), jnp.asarray(f)))
  np.testing.assert_allclose(n, np.tile([0, 0, 1.0], (36, 1)), atol=1e-6)
  import trimesh
  sphere = trimesh.creation.icosphere(subdivisions=3)
  n = np.asarray(lighting.vertex_normals(jnp.asarray(sphere.vertices, jnp.float32),
                                         jnp.asarray(sphere.faces)))
  cos = np.sum(n * sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True), 1)
  assert cos.min() > 0.999


def test_normals_gradient_finite_for_degenerate_triangle():
  v = jnp.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])  # zero area
  g = jax.grad(lambda v: jnp.sum(lighting.vertex_normals(v, jnp.array([[0, 1, 2]]))))(v)
  assert np.all(np.isfinite(np.asarray(g)))
