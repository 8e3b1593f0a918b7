"""The identity (perceptual) loss: 1 - cos(embed(render), embed(photo)), selected by a config string.

    loss_fn = make_identity_loss(config.identity)          # 'none' | 'dlib' | 'arcface_onnx:<path>'
    params = loss_fn.params                                  # frozen weights, a pytree (nnx.State)
    value = loss_fn(params, rendered, photos, landmarks)     # scalar float32, inside jit/grad

`IdentityLoss` is a pure function of arrays: the weights are an explicit argument, so under `jit`
they are an input buffer (replicate them, or shard them like any pytree) instead of a constant
baked into the program, and the images can be batch-sharded. Embeddings, normalisation and the
cosine are float32 even when the networks compute in bfloat16 (`dtype=jnp.bfloat16`).

The photo's embedding is a target: its gradient is stopped, so only the rendered image receives
gradients (through the network and the differentiable alignment). Deep3DFaceRecon composites the
render over the photo before this loss (render * mask + photo * (1 - mask)); that is the caller's
choice and happens before `rendered` is passed in.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from msma_jax.models.identity.embedders import load_arcface_embedder, load_dlib_embedder

IDENTITY_CHOICES = ("none", "dlib", "dlib:<path .dat|.npz>", "arcface_onnx:<path .onnx>")


def cosine_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """1 - cos between rows of [B, D] (any scale) -> [B] float32."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  num = jnp.sum(a * b, -1)
  den = jnp.sqrt(jnp.maximum(jnp.sum(a * a, -1) * jnp.sum(b * b, -1), 1e-24))
  return 1.0 - num / den


def identity_loss(embedder, rendered: jax.Array, photos: jax.Array, landmarks: jax.Array,
                  render_landmarks: jax.Array | None = None,
                  weights: jax.Array | None = None) -> jax.Array:
  """Mean over the batch of 1 - cos(embed(rendered), stop_gradient(embed(photos))).

  embedder: anything with `embed(images [B,H,W,3] in [0,1], landmarks [B,68,2]) -> [B, D]`.
  rendered, photos: [B, H, W, 3] in [0, 1]; landmarks: [B, 68, 2] pixel coordinates of the photo
  (also used for the render unless `render_landmarks` is given, since the render is drawn in the
  photo's frame). weights: optional [B] per-sample weights (weighted mean). -> scalar float32.
  """
  target = jax.lax.stop_gradient(embedder.embed(photos, landmarks))
  pred = embedder.embed(rendered, landmarks if render_landmarks is None else render_landmarks)
  dist = cosine_distance(pred, target)
  if weights is None:
    return jnp.mean(dist)
  w = weights.astype(jnp.float32)
  return jnp.sum(dist * w) / jnp.maximum(jnp.sum(w), 1e-12)


@dataclasses.dataclass(frozen=True, eq=False)     # hashed by identity, so it can be jit's function
class IdentityLoss:
  """A pure identity-loss function built from a config string (see `make_identity_loss`).

  name: the config string; enabled: False for 'none' (the loss is then a constant 0.0 and the
  caller can skip it); params: the frozen network weights (an `nnx.State` pytree; {} for 'none').
  """
  name: str
  graphdef: Any
  params: Any
  embedding_size: int = 0

  @property
  def enabled(self) -> bool:
    return self.graphdef is not None

  def embedder(self, params=None):
    """The NNX embedder module rebuilt from `params` (defaults to the loaded weights)."""
    if not self.enabled:
      raise ValueError("identity loss 'none' has no embedder")
    return nnx.merge(self.graphdef, self.params if params is None else params)

  def embed(self, params, images: jax.Array, landmarks: jax.Array) -> jax.Array:
    """images [B, H, W, 3] in [0, 1], landmarks [B, 68, 2] -> unit embeddings [B, D] float32."""
    return self.embedder(params).embed(images, landmarks)

  def __call__(self, params, rendered: jax.Array, photos: jax.Array, landmarks: jax.Array,
               render_landmarks: jax.Array | None = None,
               weights: jax.Array | None = None) -> jax.Array:
    """Scalar float32 loss (see `identity_loss`); 0.0 when disabled."""
    if not self.enabled:
      return jnp.zeros((), jnp.float32)
    return identity_loss(self.embedder(params), rendered, photos, landmarks, render_landmarks,
                         weights)


def make_identity_embedder(spec: str, *, dtype=jnp.float32):
  """Config string -> NNX embedder, or None for 'none'.

  'dlib' (weights from the installed face-recognition-models, converted and cached on first use),
  'dlib:<path>' (a .dat or converted .npz), 'arcface_onnx:<path>' (an insightface IResNet ONNX).
  """
  kind, _, arg = str(spec).strip().partition(":")
  kind = kind.strip().lower()
  if kind == "none" and not arg:
    return None
  if kind == "dlib":
    return load_dlib_embedder(arg or None, dtype=dtype)
  if kind == "arcface_onnx" and arg:
    return load_arcface_embedder(arg, dtype=dtype)
  raise ValueError(f"identity loss '{spec}': unknown choice (expected one of "
                   f"{', '.join(IDENTITY_CHOICES)})")


def make_identity_loss(spec: str, *, dtype=jnp.float32) -> IdentityLoss:
  """Config string -> `IdentityLoss` (pure: `loss(params, rendered, photos, landmarks)`)."""
  embedder = make_identity_embedder(spec, dtype=dtype)
  if embedder is None:
    return IdentityLoss(name="none", graphdef=None, params={})
  graphdef, params = nnx.split(embedder)
  return IdentityLoss(name=str(spec), graphdef=graphdef, params=params,
                      embedding_size=int(embedder.embedding_size))
