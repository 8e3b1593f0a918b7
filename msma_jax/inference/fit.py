"""Test-time fitting: optimise coefficients (not network weights) with the training losses.

Starts from a prediction (or the mean face) and runs Adam on the coefficients of a batch of aligned
faces. Coefficients are optimised in a normalised parametrisation so that one learning rate suits
every group: identity/expression/albedo are N(0, 1) already, angles are radians, and translation is
divided by 1 % of the camera distance (10 mm for the embedded model, 0.1 units for BFM).
"""
from __future__ import annotations

from typing import Iterable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from tqdm.auto import tqdm

from msma_jax import camera as cam
from msma_jax.face_model import FIELDS, Coefficients, FaceModel
from msma_jax.losses import compute_losses, get_loss_config


def get_fit_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # 200 x 0.05: landmarks within 0.5 px and pose within ~2 deg of the truth on synthetic faces
  # (tests/test_fit.py); pose and identity trade off slowly, so fewer steps leave pitch biased.
  c.steps = 200
  c.learning_rate = 0.05
  c.groups = ("id", "exp", "tex", "angle", "gamma", "trans")   # which coefficients move
  c.loss = get_loss_config()
  return c


def _scales(face_model: FaceModel) -> dict[str, float]:
  return {f: (0.01 * face_model.camera.distance if f == "trans" else 1.0) for f in FIELDS}


def fit_coefficients(face_model: FaceModel, init: Coefficients, batch: dict, camera: cam.Camera,
                     config: Optional[ml_collections.ConfigDict] = None, *,
                     progress: bool = False, description: str = "fitting",
                     ) -> tuple[Coefficients, dict[str, jax.Array]]:
  """Fits `init` [B] to `batch` (see `losses.compute_losses`) for config.steps Adam steps.

  Returns (fitted coefficients, loss terms of the final coefficients). Groups not in config.groups
  stay at their initial values.
  """
  config = config or get_fit_config()
  groups = tuple(config.groups)
  unknown = set(groups) - set(FIELDS)
  if unknown:
    raise ValueError(f"fit: unknown coefficient groups {sorted(unknown)} (choose from {FIELDS})")
  scales = _scales(face_model)
  fixed = {f: getattr(init, f) for f in FIELDS if f not in groups}
  params = {f: getattr(init, f) / scales[f] for f in groups}
  tx = optax.adam(config.learning_rate)
  loss_config = config.loss

  def coeffs_of(p):
    return Coefficients(**{f: p[f] * scales[f] if f in p else fixed[f] for f in FIELDS})

  def loss_fn(p):
    total, terms, _ = compute_losses(face_model, coeffs_of(p), batch, camera, loss_config)
    return total, terms

  @jax.jit
  def step(p, opt_state):
    (_, terms), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
    updates, opt_state = tx.update(g, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, terms

  opt_state = tx.init(params)
  bar = tqdm(range(int(config.steps)), desc=description, disable=not progress, leave=False)
  for _ in bar:
    params, opt_state, terms = step(params, opt_state)
    if progress:
      bar.set_postfix(loss=f"{float(terms['total']):.4f}")
  _, terms = jax.jit(loss_fn)(params)
  return coeffs_of(params), terms
