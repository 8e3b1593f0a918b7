"""Fitting-only reconstruction of a synthetic face rendered from known coefficients."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msma_jax import camera as cam
from msma_jax.inference.demo import random_coefficients
from configs.fit import get_fit_config
from msma_jax.inference.fit import CoefficientFitter, fit_coefficients
from msma_jax.losses import compute_losses
from msma_jax.render import render_face


def test_fit_from_mean_face_recovers_landmarks_and_pose(embedded):
  camera = cam.Camera.for_face_model(embedded, 224)
  truth = random_coefficients(embedded, jax.random.key(3), 2, max_yaw_deg=30, max_pitch_deg=10,
                              max_roll_deg=8)
  target = jax.jit(lambda c: render_face(embedded, c, camera))(truth)
  batch = {"image": target.image, "landmarks": target.landmarks_2d,
           "skin_mask": jnp.ones(target.mask.shape)}
  config = get_fit_config()
  fitted, terms = fit_coefficients(embedded, embedded.zero_coefficients((2,)), batch, camera,
                                   config)
  out = jax.jit(lambda c: render_face(embedded, c, camera))(fitted)
  err_px = np.linalg.norm(np.asarray(out.landmarks_2d - target.landmarks_2d), axis=-1)
  assert err_px.mean() < 2.0, err_px.mean(axis=1)
  pose_err = np.abs(np.degrees(np.asarray(fitted.angle - truth.angle)))
  assert pose_err.max() < 3.0, pose_err
  assert terms["photometric"].shape == (2,)       # per face
  assert np.all(np.asarray(terms["photometric"]) < 0.05)
  assert np.all(np.asarray(terms["kept_earlier_step"]) == 0.0)   # a sane fit ends at its last step


def _two_faces(fm, size=112):
  camera = cam.Camera.for_face_model(fm, size)
  truth = random_coefficients(fm, jax.random.key(5), 2, max_yaw_deg=25, max_pitch_deg=8,
                              max_roll_deg=5)
  target = jax.jit(lambda c: render_face(fm, c, camera))(truth)
  batch = {"image": target.image, "landmarks": target.landmarks_2d,
           "skin_mask": jnp.ones(target.mask.shape)}
  return camera, truth, batch


def test_faces_fit_independently_of_their_batch(embedded):
  """Each face's loss is its own: face 1 fitted beside face 0 comes out as fitted alone."""
  camera, _, batch = _two_faces(embedded)
  config = get_fit_config()
  config.steps, config.landmark_steps = 8, 20
  both, terms2 = fit_coefficients(embedded, embedded.zero_coefficients((2,)), batch, camera, config)
  alone, terms1 = fit_coefficients(embedded, embedded.zero_coefficients((1,)),
                                   jax.tree.map(lambda a: a[1:], batch), camera, config)
  np.testing.assert_allclose(np.asarray(both.angle[1]), np.asarray(alone.angle[0]), atol=1e-4)
  np.testing.assert_allclose(np.asarray(both.id[1]), np.asarray(alone.id[0]), atol=1e-3)
  np.testing.assert_allclose(float(terms2["total"][1]), float(terms1["total"][0]), rtol=1e-3)


def test_guard_returns_the_best_step_of_a_diverging_fit(embedded):
  """At a learning rate 1000x too large the loss blows up; the guard returns, per face, the lowest
  step seen -- never worse than the starting point -- and says so."""
  camera, _, batch = _two_faces(embedded)
  config = get_fit_config()
  config.steps, config.landmark_steps = 6, 0
  start = embedded.zero_coefficients((2,))
  one = lambda tree, i: jax.tree.map(lambda a: a[i:i + 1], tree)
  start_total = [float(compute_losses(embedded, one(start, i), one(batch, i), camera,
                                      config.loss)[0]) for i in range(2)]
  config.learning_rate = 50.0
  fitted, terms = fit_coefficients(embedded, start, batch, camera, config)
  assert np.all(np.isfinite(np.asarray(terms["total"])))
  assert np.all(np.asarray(terms["total"]) <= np.asarray(start_total) * (1 + 1e-5))
  assert np.all(np.asarray(terms["kept_earlier_step"]) == 1.0)
  for leaf in jax.tree.leaves(fitted):
    assert np.all(np.isfinite(np.asarray(leaf)))


def test_shared_groups_are_one_value_per_batch(embedded):
  """shared=("id", "tex"): both faces (two views of one person) end with one identity and albedo,
  while pose stays per face; the shared fit lowers the summed loss from the mean face."""
  camera = cam.Camera.for_face_model(embedded, 112)
  truth = random_coefficients(embedded, jax.random.key(7), 1)
  views = jax.tree.map(lambda a: jnp.repeat(a, 2, axis=0), truth)
  views = dataclasses.replace(views, angle=views.angle.at[:, 1].set(
      jnp.radians(jnp.array([-15.0, 20.0]))))
  target = jax.jit(lambda c: render_face(embedded, c, camera))(views)
  batch = {"image": target.image, "landmarks": target.landmarks_2d,
           "skin_mask": jnp.ones(target.mask.shape)}
  config = get_fit_config()
  config.steps, config.landmark_steps = 10, 60
  fitter = CoefficientFitter(embedded, camera, config)
  start = embedded.zero_coefficients((2,))
  fitted, _ = fitter.fit(start, batch, shared=("id", "tex"))
  apart, _ = fitter.fit(start, batch)
  np.testing.assert_array_equal(np.asarray(fitted.id[0]), np.asarray(fitted.id[1]))
  np.testing.assert_array_equal(np.asarray(fitted.tex[0]), np.asarray(fitted.tex[1]))
  # sharing costs the pose nothing: the yaws match those of the two faces fitted apart
  yaw, yaw_apart = (np.degrees(np.asarray(c.angle[:, 1])) for c in (fitted, apart))
  assert np.all(np.abs(yaw - yaw_apart) < 1.5), (yaw, yaw_apart)
  with pytest.raises(ValueError, match="unknown shared"):
    fitter.fit(start, batch, shared=("nose",))


def test_quality_flag_from_the_landmark_distance():
  """fit_quality: NME to the fitted points over the outer-ocular distance, flagged by the config's
  limits; a reverted fit is at best fair, a non-finite loss is a failure."""
  from configs.fit import get_reconstruct_fit_config
  from msma_jax.inference.reconstruct import fit_quality
  config = get_reconstruct_fit_config()
  target = np.random.default_rng(0).uniform(0, 200, (68, 2))
  target[36], target[45] = (50.0, 80.0), (150.0, 80.0)          # outer-ocular distance 100 px
  ok = {"total": np.array([0.1]), "kept_earlier_step": np.array([0.0])}
  for shift, flag in ((3.0, "good"), (8.0, "fair"), (12.0, "poor")):
    q = fit_quality(target + [shift, 0.0], target, ok, 0, config)
    assert q == {"landmark_nme": pytest.approx(shift / 100.0), "quality": flag}
  reverted = {**ok, "kept_earlier_step": np.array([1.0])}
  assert fit_quality(target + [3.0, 0.0], target, reverted, 0, config)["quality"] == "fair"
  assert fit_quality(target, target, {"total": np.array([np.nan])}, 0, config)["quality"] == "failed"
