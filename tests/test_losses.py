"""Each loss term against an independent NumPy computation on a tiny case."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.loss import get_loss_config
from msma_jax import camera as cam
from msma_jax import losses
from msma_jax.face_model import Coefficients, CoefficientSizes


def test_photometric_loss_matches_numpy(rng):
  a = rng.uniform(size=(2, 3, 4, 3)).astype(np.float32)
  b = rng.uniform(size=(2, 3, 4, 3)).astype(np.float32)
  m = (rng.uniform(size=(2, 3, 4)) > 0.4).astype(np.float32) * rng.uniform(size=(2, 3, 4))
  ref = 0.0
  for idx in np.ndindex(2, 3, 4):
    ref += np.sqrt(1e-6 + np.sum((a[idx] - b[idx]) ** 2)) * m[idx]
  ref /= max(m.sum(), 1.0)
  got = losses.photometric_loss(jnp.asarray(a), jnp.asarray(b), jnp.asarray(m))
  assert float(got) == pytest.approx(ref, rel=1e-5)
  # An empty mask gives 0, not NaN.
  assert float(losses.photometric_loss(jnp.asarray(a), jnp.asarray(b), jnp.zeros((2, 3, 4)))) == 0


def test_landmark_loss_weights_and_normalisation(rng):
  w = losses.landmark_weights()
  assert w.sum() == 57 + 11 * 20 and w[27] == 1 and w[28] == 20 and w[30] == 20 and w[31] == 1
  assert w[59] == 1 and np.all(w[60:] == 20)
  pred = rng.normal(size=(3, 68, 2)).astype(np.float32) * 5
  target = rng.normal(size=(3, 68, 2)).astype(np.float32) * 5
  ref = sum(w[k] * np.sum((pred[b, k] - target[b, k]) ** 2) for b in range(3) for k in range(68))
  ref /= 3 * 68
  assert float(losses.landmark_loss(jnp.asarray(pred), jnp.asarray(target))) == pytest.approx(
      ref, rel=1e-5)
  valid = np.array([1.0, 0.0, 1.0], np.float32)
  ref_v = sum(w[k] * np.sum((pred[b, k] - target[b, k]) ** 2) for b in (0, 2) for k in range(68))
  ref_v /= 2 * 68
  assert float(losses.landmark_loss(jnp.asarray(pred), jnp.asarray(target),
                                    valid=jnp.asarray(valid))) == pytest.approx(ref_v, rel=1e-5)


def test_regularisers_match_numpy(rng):
  sizes = CoefficientSizes(id=5, exp=4, tex=3)
  flat = rng.normal(size=(2, sizes.total)).astype(np.float32)
  c = Coefficients.from_flat(jnp.asarray(flat), sizes)
  ref = (1.0 * np.sum(flat[:, :5] ** 2) + 0.8 * np.sum(flat[:, 5:9] ** 2)
         + 1.7e-2 * np.sum(flat[:, 9:12] ** 2)) / 2
  assert float(losses.coefficient_regularization(c)) == pytest.approx(ref, rel=1e-5)
  gamma = flat[:, 15:42].reshape(2, 3, 9)
  ref_g = np.mean((gamma - gamma.mean(axis=1, keepdims=True)) ** 2)
  assert float(losses.gamma_regularization(c.gamma)) == pytest.approx(ref_g, rel=1e-5)
  # White light (equal channels) is not penalised.
  white = jnp.tile(jnp.asarray(rng.normal(size=(2, 1, 9)), jnp.float32), (1, 3, 1)).reshape(2, 27)
  assert float(losses.gamma_regularization(white)) == pytest.approx(0.0, abs=1e-12)


def test_reflectance_loss_matches_numpy(rng):
  albedo = rng.uniform(size=(2, 7, 3)).astype(np.float32)
  m = np.array([1, 1, 0, 0.5, 1, 0, 1], np.float32)
  mean = (albedo * m[None, :, None]).sum(1, keepdims=True) / m.sum()
  ref = np.sum(((albedo - mean) * m[None, :, None]) ** 2) / (2 * m.sum())
  got = losses.reflectance_loss(jnp.asarray(albedo), jnp.asarray(m))
  assert float(got) == pytest.approx(ref, rel=1e-5)
  flat_albedo = jnp.full((2, 7, 3), 0.4)
  assert float(losses.reflectance_loss(flat_albedo, jnp.asarray(m))) == pytest.approx(0, abs=1e-12)


def test_compute_losses_on_a_rendered_target(embedded):
  """The true coefficients of a rendered face give a near-zero photometric and landmark loss,
  a perturbed pose a larger one; gradients of the total reach every coefficient group."""
  camera = cam.Camera.for_face_model(embedded, 64)
  truth = embedded.zero_coefficients((1,)).replace(angle=jnp.array([[0.05, 0.3, 0.0]]))
  out = jax.jit(lambda c: losses.render_face(embedded, c, camera))(truth)
  batch = {"image": out.image, "landmarks": out.landmarks_2d,
           "skin_mask": jnp.ones((1, 64, 64))}
  config = get_loss_config()
  f = jax.jit(lambda c: losses.compute_losses(embedded, c, batch, camera, config)[:2])
  _, terms = f(truth)
  assert float(terms["photometric"]) < 2e-3 and float(terms["landmark"]) < 1e-8
  wrong = truth.replace(angle=truth.angle + jnp.array([[0.0, 0.15, 0.0]]))
  _, terms_wrong = f(wrong)
  assert float(terms_wrong["photometric"]) > 10 * float(terms["photometric"])
  assert float(terms_wrong["landmark"]) > 1.0
  expected = sum(config[k] * terms_wrong[k] for k in
                 ("photometric", "landmark", "coeff_reg", "gamma", "reflectance"))
  assert float(terms_wrong["total"]) == pytest.approx(float(expected), rel=1e-5)
  g = jax.jit(jax.grad(lambda c: losses.compute_losses(embedded, c, batch, camera, config)[0]))(
      wrong.replace(id=wrong.id + 0.1, tex=wrong.tex + 0.1, exp=wrong.exp + 0.1))
  for name in ("id", "exp", "tex", "angle", "gamma", "trans"):
    assert np.abs(np.asarray(getattr(g, name))).sum() > 0, name


def test_shape_loss_matches_numpy_and_is_used_only_with_ground_truth(embedded, rng):
  """Mean over the face region of the squared distance (mm²) between unposed shapes, computed here
  from the model's arrays; pose, albedo and lighting differences cost nothing."""
  s = embedded.sizes
  pred = Coefficients.from_flat(jnp.asarray(rng.normal(size=(2, s.total)), jnp.float32), s)
  truth = Coefficients.from_flat(jnp.asarray(rng.normal(size=(2, s.total)), jnp.float32), s)
  mean, idb, expb = (np.asarray(embedded.mean_shape, np.float64),
                     np.asarray(embedded.id_basis, np.float64),
                     np.asarray(embedded.exp_basis, np.float64))
  region = np.asarray(embedded.face_mask, bool)
  ref = []
  for b in range(2):
    sp = mean + idb @ np.asarray(pred.id[b], np.float64) + expb @ np.asarray(pred.exp[b], np.float64)
    st = mean + idb @ np.asarray(truth.id[b], np.float64) + expb @ np.asarray(truth.exp[b], np.float64)
    ref.append(np.mean(np.sum((sp - st)[region] ** 2, axis=-1)) * embedded.unit_in_mm ** 2)
  got = losses.shape_loss(embedded, pred, truth)
  assert float(got) == pytest.approx(np.mean(ref), rel=1e-4)
  same_shape = truth.replace(angle=pred.angle, tex=pred.tex, gamma=pred.gamma, trans=pred.trans)
  assert float(losses.shape_loss(embedded, same_shape, truth)) == 0.0
  # compute_losses adds the term only when it is weighted and the batch carries coefficients.
  camera = cam.Camera.for_face_model(embedded, 32)
  batch = {"image": jnp.zeros((2, 32, 32, 3)), "landmarks": jnp.zeros((2, 68, 2))}
  config = get_loss_config()
  assert "shape_3d" not in losses.compute_losses(embedded, pred, {**batch, "coeffs": truth.to_flat()},
                                                 camera, config)[1]
  config.shape_3d = 0.5
  assert "shape_3d" not in losses.compute_losses(embedded, pred, batch, camera, config)[1]
  total, terms, _ = losses.compute_losses(embedded, pred, {**batch, "coeffs": truth.to_flat()},
                                          camera, config)
  assert float(terms["shape_3d"]) == pytest.approx(np.mean(ref), rel=1e-4)
  rest = sum(config[k] * terms[k] for k in ("photometric", "landmark", "coeff_reg", "gamma",
                                            "reflectance"))
  assert float(total) == pytest.approx(float(rest + 0.5 * terms["shape_3d"]), rel=1e-5)


def test_shape_loss_rigid_alignment(embedded, rng):
  """align="rigid" scores the shape as the vertex metric does: the Kabsch fit of the prediction onto
  the truth over the face region (NumPy float64 reference). The gradient through the alignment
  matches central finite differences."""
  from msma_jax.evaluation.alignment import fit_similarity
  s = embedded.sizes
  pred = Coefficients.from_flat(jnp.asarray(rng.normal(size=(2, s.total)), jnp.float32), s)
  truth = Coefficients.from_flat(jnp.asarray(rng.normal(size=(2, s.total)), jnp.float32), s)
  region = np.asarray(embedded.face_mask, bool)
  ref = []
  for sp, st in zip(np.asarray(embedded.shape(pred), np.float64),
                    np.asarray(embedded.shape(truth), np.float64)):
    moved = fit_similarity(sp[region], st[region], scale=False).apply(sp)
    ref.append(np.mean(np.sum((moved - st)[region] ** 2, -1)) * embedded.unit_in_mm ** 2)
  rigid = float(losses.shape_loss(embedded, pred, truth, align="rigid"))
  assert rigid == pytest.approx(np.mean(ref), rel=1e-4)
  assert rigid < float(losses.shape_loss(embedded, pred, truth))

  def f(id0):
    p = pred.replace(id=pred.id.at[0, :3].set(id0))
    return losses.shape_loss(embedded, p, truth, align="rigid")
  x = pred.id[0, :3]
  grad = np.asarray(jax.grad(f)(x))
  h = 1e-2
  fd = [(float(f(x.at[i].add(h))) - float(f(x.at[i].add(-h)))) / (2 * h) for i in range(3)]
  np.testing.assert_allclose(grad, fd, rtol=2e-2, atol=2e-3)
  with pytest.raises(ValueError, match="shape_3d_align"):
    losses.shape_loss(embedded, pred, truth, align="similarity")
