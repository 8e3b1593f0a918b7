"""Training losses for render-and-compare (the baseline's definitions; weights in configs/loss.py).

Every term is a plain function of arrays returning a float32 scalar, so each can be logged on its
own; `compute_losses` composes them for one batch. Units: images in [0, 1], landmarks in pixels of
the image they refer to, albedo in [0, 1], coefficients as the face model defines them (N(0, 1)
scaled for BFM and the embedded model).

    total = photometric · w_photo + landmark · w_lm + coeff_reg · w_reg + gamma · w_gamma
            + reflectance · w_refl (+ identity · w_id when an identity network is configured)
            (+ shape_3d · w_shape when the batch has ground-truth coefficients: synthetic data)
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs.loss import SHAPE_ALIGN
from msma_jax import camera as cam
from msma_jax import contour
from msma_jax.face_model import Coefficients, FaceModel
from msma_jax.render import RenderForms, RenderOutput, render_face

# 0-based iBUG indices weighted 20 in the landmark loss: the nose ridge 28-30 and the inner lips 60-67.
HEAVY_LANDMARKS = (28, 29, 30, 60, 61, 62, 63, 64, 65, 66, 67)


def rigid_align(source: jax.Array, target: jax.Array, weights: jax.Array) -> jax.Array:
  """source moved by the weighted least-squares rotation + translation onto target (Kabsch).

  source, target: [B, V, 3]; weights: [V] >= 0. Returns [B, V, 3]. The transform carries no
  gradient: at the least-squares optimum the loss is stationary in it (envelope theorem), so the
  gradient of |align(source) - target|² with respect to source is exact without it.
  """
  w = (weights / jnp.sum(weights))[None, :, None]
  src_c = jnp.sum(source * w, axis=1, keepdims=True)
  tgt_c = jnp.sum(target * w, axis=1, keepdims=True)
  a, b = jax.lax.stop_gradient(source - src_c), jax.lax.stop_gradient(target - tgt_c)
  cov = jnp.einsum("bvi,bvj->bij", a * w, b)                        # [B, 3, 3] source x target
  u, _, vt = jnp.linalg.svd(cov)
  d = jnp.sign(jnp.linalg.det(jnp.einsum("bij,bjk->bik", u, vt)))   # -1: a reflection, undo it
  fix = jnp.stack([jnp.ones_like(d), jnp.ones_like(d), d], -1)[:, :, None]
  rot = jax.lax.stop_gradient(jnp.einsum("bij,bjk->bik", u * fix.transpose(0, 2, 1), vt))
  return jnp.einsum("bvi,bij->bvj", source - src_c, rot) + tgt_c    # row vectors: x @ R


def shape_loss(face_model: FaceModel, pred: Coefficients, truth: Coefficients,
               align: str = "none") -> jax.Array:
  """Mean over the front-face region of |S(pred) - S(truth)|², mm², S = unposed shape (identity +
  expression). Pose, lighting and albedo are left to the image terms.

  align: "none" (model space) or "rigid" (pred moved onto the truth first, see `rigid_align`).
  """
  if align not in SHAPE_ALIGN:
    raise ValueError(f"config.loss.shape_3d_align: unknown {align!r} (one of {SHAPE_ALIGN})")
  w = jnp.asarray(face_model.face_mask, jnp.float32)
  p, t = face_model.shape(pred), face_model.shape(truth)
  if align == "rigid":
    p = rigid_align(p, t, w)
  sq = jnp.sum((p - t) ** 2, axis=-1) * face_model.unit_in_mm ** 2  # [B, V]
  return jnp.mean(jnp.sum(sq * w, axis=-1) / jnp.sum(w))


def photometric_loss(rendered: jax.Array, image: jax.Array, mask: jax.Array,
                     eps: float = 1e-6) -> jax.Array:
  """Σ_pixels sqrt(eps + Σ_c (rendered - image)²) · mask / max(Σ mask, 1).

  rendered, image: [B, H, W, 3]; mask: [B, H, W] (rendered coverage × skin probability).
  """
  diff = jnp.sqrt(eps + jnp.sum((rendered - image) ** 2, axis=-1))
  return jnp.sum(diff * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def landmark_weights(n: int = 68) -> np.ndarray:
  """[68] per-landmark weights: 20 on the nose ridge and inner lips, 1 elsewhere."""
  w = np.ones(n, np.float32)
  w[list(HEAVY_LANDMARKS)] = 20.0
  return w


def landmark_loss(pred: jax.Array, target: jax.Array, weights: Optional[jax.Array] = None,
                  valid: Optional[jax.Array] = None) -> jax.Array:
  """Σ_b Σ_k w_k ‖pred - target‖² / (B · 68), pixels² (Deep3DFaceRecon's normalisation).

  pred, target: [B, 68, 2] pixels; weights: [68] (default `landmark_weights`); valid: optional [B]
  0/1 per sample (samples without landmarks contribute nothing; the divisor counts valid samples).
  """
  w = jnp.asarray(landmark_weights(pred.shape[-2]) if weights is None else weights, pred.dtype)
  per_sample = jnp.sum(jnp.sum((pred - target) ** 2, axis=-1) * w, axis=-1)   # [B]
  if valid is None:
    return jnp.sum(per_sample) / (pred.shape[0] * pred.shape[1])
  v = valid.astype(pred.dtype)
  return jnp.sum(per_sample * v) / (jnp.maximum(jnp.sum(v), 1.0) * pred.shape[1])


def coefficient_regularization(coeffs: Coefficients, id_weight: float = 1.0,
                               exp_weight: float = 0.8, tex_weight: float = 1.7e-2) -> jax.Array:
  """(w_id·Σ id² + w_exp·Σ exp² + w_tex·Σ tex²) / B."""
  b = coeffs.id.shape[0]
  return (id_weight * jnp.sum(coeffs.id ** 2) + exp_weight * jnp.sum(coeffs.exp ** 2)
          + tex_weight * jnp.sum(coeffs.tex ** 2)) / b


def gamma_regularization(gamma: jax.Array) -> jax.Array:
  """Mean squared deviation of each colour channel's SH coefficients from their channel mean:
  pushes the light toward white (monochromatic). gamma: [B, 27] (red bands first)."""
  g = gamma.reshape(gamma.shape[0], 3, 9)
  return jnp.mean((g - jnp.mean(g, axis=1, keepdims=True)) ** 2)


def reflectance_loss(albedo: jax.Array, skin_mask: jax.Array) -> jax.Array:
  """Albedo flatness over the skin: Σ ((albedo - skin mean) · m)² / (B · Σ m).

  albedo: [B, V, 3] in [0, 1]; skin_mask: [V] vertex weights in [0, 1].
  """
  m = skin_mask.astype(albedo.dtype)[None, :, None]
  msum = jnp.maximum(jnp.sum(skin_mask), 1e-6)
  mean = jnp.sum(albedo * m, axis=1, keepdims=True) / msum
  return jnp.sum(((albedo - mean) * m) ** 2) / (albedo.shape[0] * msum)


IdentityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def compute_losses(face_model: FaceModel, coeffs: Coefficients, batch: dict,
                   camera: cam.Camera, config: ml_collections.ConfigDict, *,
                   identity_fn: Optional[IdentityFn] = None, forms: RenderForms = RenderForms(),
                   batch_axes=None) -> tuple[jax.Array, dict[str, jax.Array], RenderOutput]:
  """All loss terms for one batch.

  batch: `image` [B, H, W, 3] in [0, 1], `landmarks` [B, 68, 2] pixels, optional `skin_mask`
  [B, H, W] (default 1), optional `landmarks_valid` [B]. identity_fn(rendered, image, landmarks)
  -> scalar, used when given and config.identity > 0. forms / batch_axes: see `render_face`.
  config.landmark_contour: the jaw landmarks follow the silhouette (`msma_jax.contour`).
  Returns (total, {term: unweighted value, ..., 'total': total}, render output).
  """
  image = batch["image"]
  out = render_face(face_model, coeffs, camera, forms=forms, batch_axes=batch_axes)
  skin = batch.get("skin_mask")
  mask = out.mask if skin is None else out.mask * skin
  _, albedo = face_model.decode(coeffs)
  landmarks_2d = out.landmarks_2d
  if config.get("landmark_contour", False):   # jaw points on the silhouette (msma_jax.contour)
    landmarks_2d = contour.with_contour(face_model, landmarks_2d, out.vertices, coeffs.angle,
                                        camera)
  terms = {
      "photometric": photometric_loss(out.image, image, mask, config.photometric_eps),
      "landmark": landmark_loss(landmarks_2d, batch["landmarks"],
                                valid=batch.get("landmarks_valid")),
      "coeff_reg": coefficient_regularization(coeffs, config.id_reg, config.exp_reg,
                                              config.tex_reg),
      "gamma": gamma_regularization(coeffs.gamma),
      "reflectance": reflectance_loss(albedo, face_model.skin_mask),
  }
  weights = {k: getattr(config, k) for k in terms}
  if identity_fn is not None and config.identity > 0:
    # The render replaces the photo only where the face is drawn (Deep3DFaceRecon's composite).
    composite = out.image * out.mask[..., None] + image * (1.0 - out.mask[..., None])
    terms["identity"] = identity_fn(composite, image, batch["landmarks"])
    weights["identity"] = config.identity
  if config.get("shape_3d", 0.0) > 0 and "coeffs" in batch:
    truth = Coefficients.from_flat(batch["coeffs"], face_model.sizes, name="batch['coeffs']")
    terms["shape_3d"] = shape_loss(face_model, coeffs, truth, config.get("shape_3d_align", "none"))
    weights["shape_3d"] = config.shape_3d
  total = sum(weights[k] * terms[k] for k in terms)
  return total, {**terms, "total": total}, out
