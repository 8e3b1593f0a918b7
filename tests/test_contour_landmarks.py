"""Jaw landmarks that follow the silhouette (msma_jax.contour, issue 18)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.errors import ConfigError
from configs.fit import get_fit_config, get_reconstruct_fit_config
from configs.loss import get_loss_config
from msma_jax import camera as cam
from msma_jax.contour import N_JAW, contour_candidates, with_contour
from msma_jax.face_model import load_face_model
from msma_jax.inference.fit import CoefficientFitter, projected_landmarks
from msma_jax.losses import compute_losses
from msma_jax.render import render_face
from msma_jax.train.config_checks import check_fit, check_loss


def _posed(fm, yaw_deg, batch=1):
  c = fm.zero_coefficients((batch,))
  return c.replace(angle=jnp.radians(jnp.array([[0.0, yaw_deg, 0.0]] * batch)))


def _edge_distance(mask, points):
  """Pixels from each point [N, 2] to the mask's edge (centres of the pixels on either side)."""
  m = mask >= 0.5
  edge = np.zeros_like(m)
  for axis in (0, 1):
    for shift in (1, -1):
      other = np.roll(m, shift, axis)
      edge |= m != other
  ys, xs = np.nonzero(edge)
  centres = np.stack([xs + 0.5, ys + 0.5], -1)
  return np.min(np.linalg.norm(points[:, None] - centres[None], axis=-1), axis=1)


@pytest.mark.parametrize("name", ["embedded", "embedded-ict"])
def test_models_carry_candidates_derived_from_their_geometry(name):
  fm = load_face_model(name)
  c = np.asarray(fm.contour_candidates)
  assert c.shape[0] == N_JAW and c.dtype == np.int32
  lm = np.asarray(fm.landmark_indices)
  assert all(lm[k] in c[k] for k in range(N_JAW))        # the fixed vertex is a candidate
  assert np.all(c[:, -1] == lm[:N_JAW])                  # ... the outermost one (padding repeats it)
  rebuilt = contour_candidates(np.asarray(fm.mean_shape), lm, np.asarray(fm.triangles))
  np.testing.assert_array_equal(rebuilt, c)


def test_turned_away_jaw_points_lie_on_the_rendered_silhouette(embedded):
  camera = cam.Camera.for_face_model(embedded, 224)
  # within 1 px at 45 deg; at 60 deg within 3 px, median 1.5 (the vertex bands are ~3.4 mm apart and
  # the lips and chin start to form the outline there)
  for yaw, tol, median in ((45.0, 1.0, 1.0), (60.0, 3.0, 2.0)):
    coeffs = _posed(embedded, yaw)
    out = render_face(embedded, coeffs, camera)
    contour = np.asarray(with_contour(embedded, out.landmarks_2d, out.vertices, coeffs.angle,
                                      camera))[0]
    mask, fixed = np.asarray(out.mask[0]), np.asarray(out.landmarks_2d[0])
    far = np.arange(9, 17)              # yaw > 0 turns the subject's left cheek (iBUG 9-16) away
    d_contour, d_fixed = _edge_distance(mask, contour[far]), _edge_distance(mask, fixed[far])
    # 14 lies at the height of the nose, whose outline hides the cheek's at 60 degrees
    visible = far != 14 if yaw > 50 else np.ones(len(far), bool)
    assert d_contour[visible].max() <= tol, (yaw, d_contour)
    assert np.median(d_contour) <= median, (yaw, d_contour)
    assert np.median(d_fixed) > 10.0, (yaw, d_fixed)     # the fixed vertices are on the hidden cheek
    near = np.arange(0, 8)                               # the near side keeps its fixed vertices
    np.testing.assert_allclose(contour[near], fixed[near], atol=1.5)


@pytest.mark.parametrize("name", ["embedded", "embedded-ict"])
def test_frontal_contour_points_stay_at_the_fixed_vertices(name):
  fm = load_face_model(name)
  camera = cam.Camera.for_face_model(fm, 224)
  coeffs = _posed(fm, 0.0)
  fixed = np.asarray(projected_landmarks(fm, coeffs, camera))
  contour = np.asarray(projected_landmarks(fm, coeffs, camera, contour=True))
  np.testing.assert_array_equal(contour[:, N_JAW:], fixed[:, N_JAW:])
  shift = np.linalg.norm(contour - fixed, axis=-1)[0, :N_JAW]
  assert np.median(shift) == 0.0 and shift.max() < 2.5, shift


def test_contour_landmarks_match_the_render_path_and_have_finite_gradients(embedded):
  camera = cam.Camera.for_face_model(embedded, 224)
  coeffs = _posed(embedded, 40.0, batch=2).replace(id=0.5 * jnp.ones((2, embedded.sizes.id)))
  out = render_face(embedded, coeffs, camera)
  via_render = with_contour(embedded, out.landmarks_2d, out.vertices, coeffs.angle, camera)
  np.testing.assert_allclose(projected_landmarks(embedded, coeffs, camera, contour=True),
                             via_render, atol=1e-3)
  grads = jax.grad(lambda c: jnp.sum(projected_landmarks(embedded, c, camera, contour=True)
                                     [:, :N_JAW] ** 2))(coeffs)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert float(jnp.abs(grads.angle).sum()) > 0 and float(jnp.abs(grads.id).sum()) > 0


def test_models_without_candidates_keep_fixed_vertices(embedded):
  fm = embedded.replace(contour_candidates=None)
  camera = cam.Camera.for_face_model(fm, 224)
  coeffs = _posed(fm, 50.0)
  np.testing.assert_array_equal(projected_landmarks(fm, coeffs, camera, contour=True),
                                projected_landmarks(fm, coeffs, camera))


def test_loss_switch_and_fitter_switch(embedded):
  camera = cam.Camera.for_face_model(embedded, 64)
  coeffs = _posed(embedded, 50.0)
  target = projected_landmarks(embedded, coeffs, camera, contour=True)
  batch = {"image": jnp.zeros((1, 64, 64, 3)), "landmarks": target}
  config = get_loss_config()
  assert config.landmark_contour is False                   # training keeps fixed vertices
  fixed = compute_losses(embedded, coeffs, batch, camera, config)[1]["landmark"]
  config.landmark_contour = True
  on = compute_losses(embedded, coeffs, batch, camera, config)[1]["landmark"]
  assert float(on) < 1e-6 < float(fixed)
  assert get_fit_config().contour_landmarks is False
  assert get_reconstruct_fit_config().contour_landmarks is True
  fit = get_fit_config()
  with fit.ignore_type():   # a config file that sets a wrong type (ml_collections allows it there)
    fit.contour_landmarks = "yes"
  with pytest.raises(ValueError, match="contour_landmarks"):
    CoefficientFitter(embedded, camera, fit)


def test_config_checks_name_the_new_keys():
  fit = get_fit_config()
  check_fit(fit)
  with fit.ignore_type():
    fit.contour_landmarks = "sometimes"
  with pytest.raises(ConfigError, match=r"^config\.fit\.contour_landmarks must be True or False"):
    check_fit(fit)
  loss = get_loss_config()
  check_loss(loss)
  with loss.ignore_type():
    loss.landmark_contour = 1
  with pytest.raises(ConfigError, match=r"^config\.loss\.landmark_contour must be True or False"):
    check_loss(loss)
  fit = get_fit_config()
  with fit.loss.ignore_type():
    fit.loss.landmark_contour = None
  with pytest.raises(ConfigError, match=r"^config\.loss\.landmark_contour"):
    check_fit(fit)
