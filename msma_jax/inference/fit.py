"""Test-time fitting: optimise coefficients (not network weights) with the training losses.

Starts from a prediction (or the mean face) and runs Adam on the coefficients of a batch of aligned
faces. Coefficients are optimised in a normalised parametrisation so that one learning rate suits
every group: identity/expression/albedo are N(0, 1) already, angles are radians, and translation is
divided by 1 % of the camera distance (10 mm for the embedded model, 0.1 units for BFM).

Two stages, both jitted:

1. `landmark_steps` (optional warm-up): the landmark and coefficient-regularisation terms only, on
   the projected landmark vertices -- no rendering, so hundreds of steps cost well under a second.
   It moves pose, shape and expression close to the photo before the expensive stage.
2. `steps`: all training losses (photometric with the skin mask, landmarks, regularisers), each step
   one render with gradients.

`CoefficientFitter` compiles once per batch size and is reused across batches (the face model is a
jit argument, not a baked-in constant); `fit_coefficients` is the one-call form.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from tqdm.auto import tqdm

from configs.fit import get_fit_config
from msma_jax import camera as cam
from msma_jax import contour as contour_lib
from msma_jax.face_model import FIELDS, Coefficients, FaceModel
from msma_jax.losses import coefficient_regularization, compute_losses, landmark_loss


def _scales(face_model: FaceModel) -> dict[str, float]:
  return {f: (0.01 * face_model.camera.distance if f == "trans" else 1.0) for f in FIELDS}


def _check_groups(groups) -> tuple[str, ...]:
  groups = tuple(groups)
  unknown = set(groups) - set(FIELDS)
  if unknown:
    raise ValueError(f"fit: unknown coefficient groups {sorted(unknown)} (choose from {FIELDS})")
  return groups


def projected_landmarks(face_model: FaceModel, coeffs: Coefficients,
                        camera: cam.Camera, *, contour: bool = False) -> jax.Array:
  """[B, 68, 2] pixels of the posed landmark vertices, decoding only those 68 vertices.

  contour: the jaw points (iBUG 0-16) follow the silhouette (`msma_jax.contour`; decodes the
  candidate vertices too); a model without `contour_candidates` keeps its fixed vertices.
  """
  idx = face_model.landmark_indices
  cand = face_model.contour_candidates if contour else None
  if cand is not None:
    idx = jnp.concatenate([idx, cand.reshape(-1)])
  shape = (face_model.mean_shape[idx]
           + jnp.einsum("...k,vck->...vc", coeffs.id, face_model.id_basis[idx])
           + jnp.einsum("...k,vck->...vc", coeffs.exp, face_model.exp_basis[idx]))
  world = cam.rigid_transform(shape, coeffs.angle, coeffs.trans)
  n = face_model.landmark_indices.shape[0]
  landmarks = cam.project(world[..., :n, :], camera)
  if cand is None:
    return landmarks
  cand_world = world[..., n:, :].reshape(*world.shape[:-2], *cand.shape, 3)
  return landmarks.at[..., :contour_lib.N_JAW, :].set(
      contour_lib.jaw_contour_2d(face_model, cand_world, coeffs.angle, camera))


def _check_contour(config) -> bool:
  value = config.get("contour_landmarks", False)
  if not isinstance(value, bool):
    raise ValueError(f"fit: config.contour_landmarks must be True or False, got {value!r}")
  return value


class CoefficientFitter:
  """Fits batches of coefficients for one face model, camera and fit config.

  `fit(init, batch)` runs the two stages of the module docstring; the jitted functions are built
  once here, so a fitter reused across batches of one size compiles once. config.contour_landmarks
  (default False) makes the jaw landmarks follow the silhouette in both stages (`msma_jax.contour`).
  """

  def __init__(self, face_model: FaceModel, camera: cam.Camera,
               config: Optional[ml_collections.ConfigDict] = None):
    self.face_model, self.camera = face_model, camera
    self.config = config = config or get_fit_config()
    self.groups = _check_groups(config.groups)
    self.landmark_groups = _check_groups(config.get("landmark_groups", ("id", "exp", "angle",
                                                                        "trans")))
    self.scales = _scales(face_model)
    self.tx = optax.adam(config.learning_rate)
    # config.contour_landmarks decides both stages (it overrides config.loss.landmark_contour)
    self.contour = contour = _check_contour(config)
    loss_config = ml_collections.ConfigDict(config.loss.to_dict())
    loss_config.landmark_contour = contour

    def split(coeffs, groups):
      params = {f: getattr(coeffs, f) / self.scales[f] for f in groups}
      fixed = {f: getattr(coeffs, f) for f in FIELDS if f not in groups}
      return params, fixed

    def join(params, fixed):
      return Coefficients(**{f: params[f] * self.scales[f] if f in params else fixed[f]
                             for f in FIELDS})

    self._split, self._join = split, join

    def full_loss(params, fixed, fm, batch):
      total, terms, _ = compute_losses(fm, join(params, fixed), batch, camera, loss_config)
      return total, terms

    def full_step(params, opt_state, fixed, fm, batch, lr_scale):
      # lr_scale 0 evaluates the loss terms at `params` without moving them (reuses this program
      # instead of compiling a separate forward pass for the final report).
      (_, terms), g = jax.value_and_grad(full_loss, has_aux=True)(params, fixed, fm, batch)
      updates, new_state = self.tx.update(g, opt_state, params)
      updates = jax.tree.map(lambda u: u * lr_scale, updates)
      new_state = jax.tree.map(lambda n, o: jnp.where(lr_scale > 0, n, o), new_state, opt_state)
      return optax.apply_updates(params, updates), new_state, terms

    def landmark_terms(params, fixed, fm, batch):
      coeffs = join(params, fixed)
      lm = landmark_loss(projected_landmarks(fm, coeffs, camera, contour=contour),
                         batch["landmarks"],
                         valid=batch.get("landmarks_valid"))
      reg = coefficient_regularization(coeffs, loss_config.id_reg, loss_config.exp_reg,
                                       loss_config.tex_reg)
      total = loss_config.landmark * lm + loss_config.coeff_reg * reg
      return total, {"landmark": lm, "coeff_reg": reg, "total": total}

    def landmark_stage(params, fixed, fm, batch, num_steps):
      def body(carry, _):
        p, s = carry
        (_, terms), g = jax.value_and_grad(landmark_terms, has_aux=True)(p, fixed, fm, batch)
        updates, s = self.tx.update(g, s, p)
        return (optax.apply_updates(p, updates), s), None
      (params, _), _ = jax.lax.scan(body, (params, self.tx.init(params)), None, length=num_steps)
      return params, landmark_terms(params, fixed, fm, batch)[1]

    self._full_step = jax.jit(full_step)
    self._landmark_stage = jax.jit(landmark_stage, static_argnames="num_steps")

  def fit(self, init: Coefficients, batch: dict, *, steps: Optional[int] = None,
          landmark_steps: Optional[int] = None, progress: bool = False,
          description: str = "fitting", callback: Optional[Callable[[int, dict], None]] = None,
          ) -> tuple[Coefficients, dict[str, jax.Array]]:
    """Fits `init` (batch [B]) to `batch` (see `losses.compute_losses`: image [B, H, W, 3] in
    [0, 1] at the camera's size, landmarks [B, 68, 2] pixels, optional skin_mask [B, H, W]).

    Returns (coefficients, loss terms of the returned coefficients: all training terms when
    config.steps > 0, else the landmark stage's terms, else {}). callback(step, terms) is called
    after every full step (e.g. for a progress display of one's own). steps / landmark_steps
    override the config's counts (no recompilation: the full step is one jitted call per step).
    """
    config, fm = self.config, self.face_model
    coeffs, terms = init, {}
    n_lm = int(config.get("landmark_steps", 0) if landmark_steps is None else landmark_steps)
    if n_lm > 0:
      params, fixed = self._split(coeffs, self.landmark_groups)
      params, terms = self._landmark_stage(params, fixed, fm, batch, num_steps=n_lm)
      coeffs = self._join(params, fixed)
    steps = int(config.steps if steps is None else steps)
    if steps <= 0:
      return coeffs, terms
    params, fixed = self._split(coeffs, self.groups)
    opt_state = self.tx.init(params)
    bar = tqdm(range(steps), desc=description, disable=not progress, leave=False, unit="step")
    one = jnp.float32(1.0)
    for i in bar:
      params, opt_state, terms = self._full_step(params, opt_state, fixed, fm, batch, one)
      if progress:
        bar.set_postfix(loss=f"{float(terms['total']):.4f}")
      if callback is not None:
        callback(i, terms)
    _, _, terms = self._full_step(params, opt_state, fixed, fm, batch, jnp.float32(0.0))
    return self._join(params, fixed), terms


def fit_coefficients(face_model: FaceModel, init: Coefficients, batch: dict, camera: cam.Camera,
                     config: Optional[ml_collections.ConfigDict] = None, *,
                     progress: bool = False, description: str = "fitting",
                     ) -> tuple[Coefficients, dict[str, jax.Array]]:
  """Fits `init` [B] to `batch` (see `losses.compute_losses`) for config.steps Adam steps (after
  config.landmark_steps landmark-only steps).

  Returns (fitted coefficients, loss terms of the final coefficients). Groups not in config.groups
  stay at their initial values. To fit many batches, build one `CoefficientFitter` and reuse it.
  """
  return CoefficientFitter(face_model, camera, config).fit(init, batch, progress=progress,
                                                            description=description)
