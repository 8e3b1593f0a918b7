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

Each face's loss is its own (the batch losses are evaluated on every face as a batch of one,
vmapped), so a face fits the same alone or beside others, and a loss-increase guard judges each
face: one whose final loss is not finite or exceeds `guard_ratio` x its lowest returns that lowest
step. `shared` groups (e.g. one identity for a person's video frames) are one value for the batch.

`CoefficientFitter` compiles once per batch size and is reused across batches (the face model is a
jit argument, not a baked-in constant); `fit_coefficients` is the one-call form.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

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
from msma_jax.train.config_checks import check_fit


def _scales(face_model: FaceModel) -> dict[str, float]:
  return {f: (0.01 * face_model.camera.distance if f == "trans" else 1.0) for f in FIELDS}


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


def _per_face(loss_fn, fm, coeffs: Coefficients, batch: dict):
  """loss_fn(fm, coeffs, batch) -> (total, terms) evaluated on each face as a batch of one
  (vmapped), so that faces do not share normalisations. -> (totals [B], terms {k: [B]})."""
  def single(c, b):
    return loss_fn(fm, jax.tree.map(lambda a: a[None], c), jax.tree.map(lambda a: a[None], b))
  return jax.vmap(single)(coeffs, batch)


def _empty_guard(terms_shape: dict, params: dict) -> dict:
  """The guard before any evaluation: no best yet (total +inf; terms NaN, which is what a face
  reports if no step of its fit ever had a finite loss: it keeps its starting coefficients)."""
  n = terms_shape["total"].shape[0]
  return {"params": params, "total": jnp.full((n,), jnp.inf, jnp.float32),
          "terms": {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in terms_shape.items()},
    }


def _keep_best(guard: dict, params: dict, terms: dict, shared: bool) -> dict:
  """Keeps, per face, the parameters and terms of the lowest total seen (a NaN is never lowest).
  shared: the batch is one fit (shared groups), judged by its summed total."""
  total = terms["total"]
  if shared:
    better = jnp.broadcast_to(jnp.sum(total) < jnp.sum(guard["total"]), total.shape)
    pick = lambda new, old: jnp.where(better[0], new, old)
  else:
    better = total < guard["total"]
    pick = lambda new, old: jnp.where(better.reshape(better.shape + (1,) * (new.ndim - 1)),
                                      new, old)
  return {"params": jax.tree.map(pick, params, guard["params"]),
          "total": jnp.where(better, total, guard["total"]),
          "terms": jax.tree.map(pick, terms, guard["terms"])}


def _settle(guard: dict, params: dict, terms: dict, ratio: float, shared: bool
            ) -> tuple[dict, dict[str, jax.Array]]:
  """The loss-increase guard's verdict on the last parameters `params` (terms: theirs).

  Each face keeps its last parameters unless their total is not finite or exceeds `ratio` x the
  lowest total seen; then the lowest step's. -> (params, terms with "kept_earlier_step" [B] 1/0).
  """
  total, best = terms["total"], guard["total"]
  if shared:
    bad = ~(jnp.sum(total) <= ratio * jnp.sum(best))
    bad = jnp.broadcast_to(bad, total.shape)
    pick = lambda last, low: jnp.where(bad[0], low, last)
  else:
    bad = ~(total <= ratio * best)         # NaN compares False: reverted
    pick = lambda last, low: jnp.where(bad.reshape(bad.shape + (1,) * (last.ndim - 1)), low, last)
  return (jax.tree.map(pick, params, guard["params"]),
          {**jax.tree.map(pick, terms, guard["terms"]), "kept_earlier_step": bad.astype(jnp.float32)})


def _step_scale(schedule: str, i: int, steps: int) -> float:
  """Multiplier of the learning rate at full step i of `steps`."""
  if schedule == "cosine":
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * i / max(steps - 1, 1)))
  return 1.0


class CoefficientFitter:
  """Fits batches of coefficients for one face model, camera and fit config.

  `fit(init, batch)` runs the two stages of the module docstring; the jitted functions are built
  once here, so a fitter reused across batches of one size compiles once. config.contour_landmarks
  (default False) makes the jaw landmarks follow the silhouette in both stages (`msma_jax.contour`).
  Faces are fitted independently (per-face losses, per-face guard: see `fit`).
  """

  def __init__(self, face_model: FaceModel, camera: cam.Camera,
               config: Optional[ml_collections.ConfigDict] = None):
    self.face_model, self.camera = face_model, camera
    self.config = config = config or get_fit_config()
    check_fit(config)
    self.groups = tuple(config.groups)
    self.landmark_groups = tuple(config.get("landmark_groups", ("id", "exp", "angle", "trans")))
    self.schedule = config.get("schedule", "constant")
    ratio = float(config.get("guard_ratio", 2.0))
    self.scales = _scales(face_model)
    self.tx = tx = optax.adam(config.learning_rate)
    # config.contour_landmarks decides both stages (it overrides config.loss.landmark_contour)
    self.contour = contour = config.get("contour_landmarks", False)
    loss_config = ml_collections.ConfigDict(config.loss.to_dict())
    loss_config.landmark_contour = contour

    def full_loss(fm, coeffs, batch):
      total, terms, _ = compute_losses(fm, coeffs, batch, camera, loss_config)
      return total, terms

    def landmark_loss_terms(fm, coeffs, batch):
      lm = landmark_loss(projected_landmarks(fm, coeffs, camera, contour=contour),
                         batch["landmarks"], valid=batch.get("landmarks_valid"))
      reg = coefficient_regularization(coeffs, loss_config.id_reg, loss_config.exp_reg,
                                       loss_config.tex_reg)
      total = loss_config.landmark * lm + loss_config.coeff_reg * reg
      return total, {"landmark": lm, "coeff_reg": reg, "total": total}

    def objective(loss_fn):
      """(params, fixed, fm, batch) -> (sum of the per-face totals, per-face terms {k: [B]})."""
      def fn(params, fixed, fm, batch):
        totals, terms = _per_face(loss_fn, fm, self._join(params, fixed, batch), batch)
        return jnp.sum(totals), terms
      return fn

    def make_step(loss_fn, shared: bool):
      value_and_grad = jax.value_and_grad(objective(loss_fn), has_aux=True)

      def step(params, opt_state, guard, fixed, fm, batch, lr_scale):
        # The terms are those of `params`, before this update; the guard keeps the best of them.
        # lr_scale 0 only evaluates (the last parameters get judged without another program).
        (_, terms), g = value_and_grad(params, fixed, fm, batch)
        guard = _keep_best(guard, params, terms, shared)
        updates, new_state = tx.update(g, opt_state, params)
        updates = jax.tree.map(lambda u: u * lr_scale, updates)
        new_state = jax.tree.map(lambda n, o: jnp.where(lr_scale > 0, n, o), new_state, opt_state)
        return optax.apply_updates(params, updates), new_state, guard, terms
      return step

    def start(loss_fn):
      def fn(params, fixed, fm, batch):   # trace-time shapes only: nothing is computed
        _, terms = jax.eval_shape(objective(loss_fn), params, fixed, fm, batch)
        return tx.init(params), _empty_guard(terms, params)
      return jax.jit(fn)

    def landmark_stage(params, fixed, fm, batch, num_steps, shared):
      step = make_step(landmark_loss_terms, shared)
      _, terms = jax.eval_shape(objective(landmark_loss_terms), params, fixed, fm, batch)
      guard = _empty_guard(terms, params)

      def body(carry, _):
        return step(*carry, fixed, fm, batch, jnp.float32(1.0))[:3], None
      (params, state, guard), _ = jax.lax.scan(body, (params, tx.init(params), guard), None,
                                               length=num_steps)
      _, _, guard, terms = step(params, state, guard, fixed, fm, batch, jnp.float32(0.0))
      return _settle(guard, params, terms, ratio, shared)

    self._start = start(full_loss)
    self._full_step = {s: jax.jit(make_step(full_loss, s)) for s in (False, True)}
    self._settle = jax.jit(_settle, static_argnames=("ratio", "shared"))
    self._ratio = ratio
    self._landmark_stage = jax.jit(landmark_stage, static_argnames=("num_steps", "shared"))

  def _split(self, coeffs: Coefficients, groups, shared=()) -> tuple[dict, dict]:
    """Optimised parameters (normalised; a shared group as its first face's row [1, K]) and the
    fixed groups."""
    params = {f: getattr(coeffs, f)[:1] / self.scales[f] if f in shared
              else getattr(coeffs, f) / self.scales[f] for f in groups}
    fixed = {f: getattr(coeffs, f) for f in FIELDS if f not in groups}
    return params, fixed

  def _join(self, params: dict, fixed: dict, batch: dict) -> Coefficients:
    n = batch["landmarks"].shape[0]
    return Coefficients(**{
        f: jnp.broadcast_to(params[f] * self.scales[f], (n,) + params[f].shape[1:])
        if f in params else fixed[f] for f in FIELDS})

  def fit(self, init: Coefficients, batch: dict, *, steps: Optional[int] = None,
          landmark_steps: Optional[int] = None, progress: bool = False,
          description: str = "fitting", callback: Optional[Callable[[int, dict], None]] = None,
          shared: Sequence[str] = ()) -> tuple[Coefficients, dict[str, jax.Array]]:
    """Fits `init` (batch [B]) to `batch` (see `losses.compute_losses`: image [B, H, W, 3] in
    [0, 1] at the camera's size, landmarks [B, 68, 2] pixels, optional skin_mask [B, H, W]).

    Each face's loss is its own (a batch of one), so a face fits the same alone or in a batch;
    `shared` names coefficient groups that are one value for the whole batch instead (e.g.
    ("id", "tex") for the frames of one person in a video), started at the batch mean of `init`.

    Guard (loss increase): each step's loss is evaluated before its update; a face whose last
    total is not finite or exceeds config.guard_ratio x its lowest total seen returns that lowest
    step's coefficients (with `shared` groups the batch is judged by its summed total). A fit
    never ends far above its best, and a diverging or NaN face keeps its best step.
    config.schedule "cosine" lowers the full stage's step size to 10 % over the steps.

    Returns (coefficients [B], per-face terms {name: [B]} of the returned coefficients -- all
    training terms when steps > 0, else the landmark stage's, else {} -- with
    "kept_earlier_step" [B]: 1.0 where the guard returned an earlier step than the last).
    callback(step, terms) is called after every full step with the lowest terms seen so far.
    steps / landmark_steps override the config's counts (no recompilation).
    """
    config, fm = self.config, self.face_model
    shared = tuple(shared)
    unknown = sorted(set(shared) - set(FIELDS))
    if unknown:
      raise ValueError(f"fit: unknown shared coefficient groups {unknown} (choose from {FIELDS})")
    if shared:
      init = dataclasses.replace(init, **{
          f: jnp.broadcast_to(jnp.mean(jnp.asarray(getattr(init, f)), axis=0, keepdims=True),
                              jnp.shape(getattr(init, f))) for f in shared})
    coeffs, terms = init, {}
    n_lm = int(config.get("landmark_steps", 0) if landmark_steps is None else landmark_steps)
    if n_lm > 0:
      params, fixed = self._split(coeffs, self.landmark_groups, shared)
      params, terms = self._landmark_stage(params, fixed, fm, batch, num_steps=n_lm,
                                           shared=bool(shared))
      coeffs = self._join(params, fixed, batch)
    steps = int(config.steps if steps is None else steps)
    if steps <= 0:
      return coeffs, terms
    params, fixed = self._split(coeffs, self.groups, shared)
    step = self._full_step[bool(shared)]
    opt_state, guard = self._start(params, fixed, fm, batch)
    bar = tqdm(range(steps), desc=description, disable=not progress, leave=False, unit="step")
    for i in bar:
      scale = jnp.float32(_step_scale(self.schedule, i, steps))
      params, opt_state, guard, _ = step(params, opt_state, guard, fixed, fm, batch, scale)
      if progress:
        bar.set_postfix(loss=f"{float(jnp.mean(guard['total'])):.4f}")
      if callback is not None:
        callback(i, guard["terms"])
    _, _, guard, last = step(params, opt_state, guard, fixed, fm, batch, jnp.float32(0.0))
    params, terms = self._settle(guard, params, last, ratio=self._ratio, shared=bool(shared))
    return self._join(params, fixed, batch), terms


def fit_coefficients(face_model: FaceModel, init: Coefficients, batch: dict, camera: cam.Camera,
                     config: Optional[ml_collections.ConfigDict] = None, *,
                     progress: bool = False, description: str = "fitting",
                     ) -> tuple[Coefficients, dict[str, jax.Array]]:
  """Fits `init` [B] to `batch` (see `losses.compute_losses`) for config.steps Adam steps (after
  config.landmark_steps landmark-only steps).

  Returns (fitted coefficients, per-face loss terms {name: [B]} of them; see `CoefficientFitter.fit`). Groups not in config.groups
  stay at their initial values. To fit many batches, build one `CoefficientFitter` and reuse it.
  """
  return CoefficientFitter(face_model, camera, config).fit(init, batch, progress=progress,
                                                            description=description)
