"""Inference-only building blocks shared by the face-descriptor networks (NHWC, weights HWIO).

The networks are pretrained and frozen: their weights are `Frozen` variables (not `nnx.Param`), so
an optimiser built over a model's `nnx.Param` state never updates them, and batch norms are stored
folded into per-channel scale/shift. Arithmetic runs in the dtype of the activations (bfloat16 or
float32); weights are cast to it at use.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Frozen(nnx.Variable):
  """A pretrained weight that is not trained (kept out of `nnx.Param` state)."""


def conv2d(x: jax.Array, weight: jax.Array, bias: jax.Array | None, stride: int,
           padding: int) -> jax.Array:
  """[B, H, W, Cin] * [kh, kw, Cin, Cout] -> [B, H', W', Cout]; symmetric zero padding, no flip."""
  y = jax.lax.conv_general_dilated(
      x, weight.astype(x.dtype), (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y if bias is None else y + bias.astype(x.dtype)


def channel_affine(x: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
  """x * scale + shift over the last (channel) axis."""
  return x * scale.astype(x.dtype) + shift.astype(x.dtype)


def pool2d(x: jax.Array, kind: str, window: int, stride: int) -> jax.Array:
  """Unpadded max/average pooling over H, W (output 1 + (n - window) // stride)."""
  dims, strides = (1, window, window, 1), (1, stride, stride, 1)
  if kind == "max":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, "VALID")
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, "VALID")
  return total / (window * window)


def add_zero_padded(a: jax.Array, b: jax.Array) -> jax.Array:
  """Sum of two [B, H, W, C] tensors of different H/W/C, each zero-padded at the end (dlib's add)."""
  shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape))

  def pad(t):
    return jnp.pad(t, [(0, s - n) for s, n in zip(shape, t.shape)])
  return pad(a) + pad(b)


def prelu(x: jax.Array, slope: jax.Array) -> jax.Array:
  """max(x, 0) + slope * min(x, 0), slope per channel."""
  return jnp.where(x >= 0, x, x * slope.astype(x.dtype))


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows of [B, D] scaled to unit length, in float32 whatever the input dtype."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))
