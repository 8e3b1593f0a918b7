"""One jitted training step and the prediction function evaluation uses, with explicit shardings.

train_step(state, batch) -> (state, metrics): encoder forward (batch norm in training mode), the
losses of `msma_jax.losses` (rendering sharded over the batch's mesh axes), gradients, optimizer
update. A step whose loss or gradient norm is not finite is skipped: the returned state is the input
state (parameters, optimizer moments and batch-norm statistics unchanged) and `train/skipped` is 1.
The input state is donated, so the update reuses its buffers.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from msma_jax import camera as cam
from msma_jax.face_model import FaceModel
from msma_jax.losses import compute_losses
from msma_jax.render import RenderForms
from msma_jax.train.mesh import DATA_AXES, batch_sharding, replicated

# What the step reads from a batch (the pipeline also carries bookkeeping such as record indices).
BATCH_KEYS = ("image", "landmarks", "skin_mask", "valid")


def device_batch_keys(batch: dict, with_coeffs: bool = False) -> dict:
  """The arrays a step reads; ground-truth coefficients (synthetic data) only when a loss uses them
  (`loss.shape_3d`), so other runs do not ship them to the devices."""
  keys = BATCH_KEYS + (("coeffs",) if with_coeffs else ())
  return {k: batch[k] for k in keys if k in batch}


def render_forms(config) -> RenderForms:
  """The renderer's forms of `config.render` (a run config saved before that section: "auto")."""
  return RenderForms.from_config(config.render) if "render" in config else RenderForms()


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_train_step(train_state, face_model: FaceModel, camera: cam.Camera, config, mesh: Mesh,
                    identity_fn: Optional[Callable] = None):
  graphdef = train_state.graphdef_train
  loss_config = config.loss
  forms = render_forms(config)

  def train_step(state, batch):
    # nnx.merge reuses the State's Variable objects and the optimizer updates them in place, so
    # keep an independent copy of the input for the NaN guard.
    old = jax.tree.map(lambda x: x, state)
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
      coeffs = model(batch["image"])
      batch_for_loss = {**batch, "landmarks_valid": batch.get("valid")}
      total, terms, _ = compute_losses(face_model, coeffs, batch_for_loss, camera, loss_config,
                                       identity_fn=identity_fn, forms=forms,
                                       batch_axes=DATA_AXES)
      return total, terms

    (loss, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(grads)
    optimizer.update(model, grads)
    updated = nnx.state((model, optimizer))
    # NaN/Inf guard: keep every array of the input state (including batch-norm statistics).
    new_state = jax.tree.map(lambda new, prev: jnp.where(ok, new, prev), updated, old)
    metrics = {f"train/{k}": v for k, v in terms.items()}
    metrics["train/grad_norm"] = grad_norm
    metrics["train/skipped"] = (~ok).astype(jnp.int32)
    return new_state, metrics

  data = batch_sharding(mesh)
  return jax.jit(train_step, donate_argnums=0,
                 in_shardings=(train_state.shardings, data),
                 out_shardings=(train_state.shardings, replicated(mesh)))


def make_predict_fn(train_state, mesh: Mesh):
  """state, images [B, H, W, 3] -> Coefficients (batch norm in inference mode)."""
  graphdef = train_state.graphdef_eval

  def predict(state, images):
    model, _ = nnx.merge(graphdef, state)
    return model(images)

  return jax.jit(predict, in_shardings=(train_state.shardings, batch_sharding(mesh)),
                 out_shardings=replicated(mesh))
