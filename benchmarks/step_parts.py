"""The training step of a config and its stages as jitted functions with arguments, for timing
(bench_train.py, device_suite.py) and for XLA's cost and memory analyses (cost_model.py).

    from step_parts import train_parts       # benchmarks/ is on sys.path when a script runs
    mesh, parts = train_parts(config, face_model, batch=8)
    with jax.set_mesh(mesh):
      parts["full step"]()                    # one call (the full step updates its state)
      parts["encoder"].compiled().cost_analysis()

Parts (each over the whole batch of `batch` images, sharded over the mesh's devices):
  full step      the jitted train step of `msma-jax train` (forward, losses, backward, optimizer)
  encoder fwd    the encoder's forward (batch norm in training mode)
  encoder        the encoder, forward + backward (VJP of random cotangents)
  render+losses  decode -> render -> all loss terms, forward + backward w.r.t. the coefficients
  render         the same render, forward + backward of a plain sum of its image (no loss terms)
  render fwd     the render's forward alone
Inputs are random photos, landmarks and skin masks (the cost does not depend on pixel values) and
coefficients near the mean face; nothing is executed to build them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from msma_jax import camera as cam
from msma_jax.losses import compute_losses
from msma_jax.render import render_face
from msma_jax.train.mesh import batch_sharding, make_mesh
from msma_jax.train.state import create_train_state, initial_model
from msma_jax.train.step import make_train_step, render_forms


@dataclasses.dataclass
class Part:
  """A jitted stage and the arguments it is called with. A `donates` part returns (new first
  argument, output): calling it stores the new first argument (the train state) for the next call."""
  fn: Callable
  args: list
  donates: bool = False

  def __call__(self) -> Any:
    out = self.fn(*self.args)
    if self.donates:
      self.args[0], out = out
    return out

  def compiled(self):
    """The XLA executable (`cost_analysis()`, `memory_analysis()`); compiles, runs nothing."""
    return self.fn.lower(*self.args).compile()


def cost_of(compiled) -> dict:
  """XLA's cost analysis of a compiled program: {"flops", "bytes"} (bytes accessed) per call."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def memory_of(compiled) -> dict:
  """Per-device bytes of a compiled program: arguments, outputs, aliased (donated) buffers,
  temporaries, and total = arguments + outputs - aliased + temporaries ({} where unknown)."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  out = {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
         "alias": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes}
  out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def random_batch(b: int, size: int, seed: int = 0) -> dict:
  """A training batch of b random photos [b, size, size, 3] in [0, 1], landmarks [b, 68, 2] in
  pixels inside the middle of the crop, all-ones skin masks [b, size, size] and valid flags [b]."""
  rng = np.random.default_rng(seed)
  return {"image": rng.uniform(size=(b, size, size, 3)).astype(np.float32),
          "landmarks": rng.uniform(0.3 * size, 0.7 * size, size=(b, 68, 2)).astype(np.float32),
          "skin_mask": np.ones((b, size, size), np.float32),
          "valid": np.ones((b,), np.float32)}


def _near_mean_face(coeff_shapes, seed: int):
  """Coefficients of the given shapes: 0.05 x N(0, 1) (faces near the mean, frontal)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.05 * rng.normal(size=s.shape), s.dtype),
                      coeff_shapes)


def train_parts(config, face_model, batch: int, seed: int = 0) -> tuple[Any, dict[str, Part]]:
  """(mesh, {name: Part}) for `config`'s train step on a global batch of `batch` images at
  `config.image_size`². Call or compile the parts inside `jax.set_mesh(mesh)`."""
  size = int(config.image_size)
  camera = cam.Camera.for_face_model(face_model, size)
  mesh = make_mesh(config.mesh)
  ts = create_train_state(config, initial_model(config, face_model, with_init=False)[0], mesh,
                          1000, 100)
  data = jax.device_put(random_batch(batch, size, seed), batch_sharding(mesh))
  forms = render_forms(config)
  with jax.set_mesh(mesh):
    step = make_train_step(ts, face_model, camera, config, mesh)
    model, _ = nnx.merge(ts.graphdef_train, ts.state)
  # Copies: the full step donates the train state's buffers, which the other parts must outlive.
  params, model_def = jax.tree.map(jnp.copy, nnx.state(model)), nnx.graphdef(model)

  def encode(params, images):
    return nnx.merge(model_def, params)(images)

  @jax.jit
  def encoder_vjp(params, images, cot):
    _, vjp = jax.vjp(lambda p: encode(p, images), params)
    return vjp(cot)

  coeff_shapes = jax.eval_shape(encode, params, data["image"])
  cot = _near_mean_face(coeff_shapes, seed + 1)
  coeffs = _near_mean_face(coeff_shapes, seed + 2)
  loss_batch = {**data, "landmarks_valid": data["valid"]}

  def render_sum(c):
    return jnp.sum(render_face(face_model, c, camera, forms=forms).image * data["image"])

  parts = {
      "full step": Part(step, [ts.state, data], donates=True),
      "encoder fwd": Part(jax.jit(encode), [params, data["image"]]),
      "encoder": Part(encoder_vjp, [params, data["image"], cot]),
      "render+losses": Part(jax.jit(jax.grad(lambda c: compute_losses(
          face_model, c, loss_batch, camera, config.loss, forms=forms)[0])), [coeffs]),
      "render": Part(jax.jit(jax.grad(render_sum)), [coeffs]),
      "render fwd": Part(jax.jit(lambda c: render_face(face_model, c, camera, forms=forms).image),
                         [coeffs]),
  }
  return mesh, parts
