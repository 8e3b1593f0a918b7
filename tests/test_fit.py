"""Fitting-only reconstruction of a synthetic face rendered from known coefficients."""
import jax
import jax.numpy as jnp
import numpy as np

from msma_jax import camera as cam
from msma_jax.inference.demo import random_coefficients
from configs.fit import get_fit_config
from msma_jax.inference.fit import fit_coefficients
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
  assert float(terms["photometric"]) < 0.05
