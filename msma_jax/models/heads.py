"""Coefficient heads: one per attribute (id, exp, tex, angle, gamma, trans) or one shared.

Input: a feature map `[B, H, W, C]`; output: `Coefficients` (float32, each field `[B, size]`, sizes
from the face model). Per attribute: optional attention block of its own on the map, global
pooling, optional hidden layer (Dense + ReLU), final Dense. Shared: the same with one trunk and one
final Dense to the flat vector, split in Deep3DFaceRecon's order.

Final layers are zero-initialised (kernel and bias), so a freshly built encoder predicts all-zero
coefficients: the mean face, frontal, at the origin, ambient light only (DESIGN.md). With
`hidden=0` a per-attribute head is exactly Deep3DFaceRecon's final 1x1 convolutions on the pooled
features.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from msma_jax.face_model import Coefficients, CoefficientSizes
from msma_jax.face_model.coefficients import FIELDS
from msma_jax.models.attention import AttentionBlock
from msma_jax.models.layers import Policy

HEAD_MODES = ("per_attribute", "shared")
POOLS = ("avg", "max")


def global_pool(x: jax.Array, kind: str = "avg") -> jax.Array:
  """[B, H, W, C] -> [B, C] by mean or max over H, W."""
  return x.mean(axis=(1, 2)) if kind == "avg" else x.max(axis=(1, 2))


class _Trunk(nnx.Module):
  """Optional attention -> pool -> optional Dense+ReLU -> zero-initialised Dense(out)."""

  def __init__(self, in_features: int, out_features: int, hidden: int, pool: str,
               attention: str | None, attention_kernels, *, policy: Policy, rngs: nnx.Rngs):
    self.attention = (AttentionBlock(in_features, attention, attention_kernels, policy=policy,
                                     rngs=rngs) if attention else None)
    self.hidden = policy.dense(in_features, hidden, rngs=rngs) if hidden else None
    self.out = policy.dense(hidden or in_features, out_features, zero_init=True, rngs=rngs)
    self.pool = pool

  def __call__(self, x: jax.Array, pooled: jax.Array | None = None) -> jax.Array:
    if self.attention is not None:
      pooled = global_pool(self.attention(x), self.pool)
    elif pooled is None:
      pooled = global_pool(x, self.pool)
    if self.hidden is not None:
      pooled = jax.nn.relu(self.hidden(pooled))
    return self.out(pooled).astype(jnp.float32)


class AttributeHeads(nnx.Module):
  """Feature map `[B, H, W, in_features]` -> `Coefficients` with `sizes`.

  mode: "per_attribute" (a trunk per coefficient group) or "shared" (one trunk, one flat output);
  hidden: width of the optional hidden layer (0: none); pool: "avg" or "max";
  attention: None or "lka"/"mlka", an attention block per head (per attribute) or one (shared).
  """

  def __init__(self, in_features: int, sizes: CoefficientSizes, mode: str = "per_attribute",
               hidden: int = 0, pool: str = "avg", attention: str | None = None,
               attention_kernels=None, *, policy: Policy, rngs: nnx.Rngs):
    if mode not in HEAD_MODES:
      raise ValueError(f"heads: unknown mode '{mode}' (known: {HEAD_MODES})")
    if pool not in POOLS:
      raise ValueError(f"heads: unknown pool '{pool}' (known: {POOLS})")
    self.sizes = CoefficientSizes(*sizes)
    self.mode = mode
    self.pool = pool
    kw = dict(hidden=hidden, pool=pool, attention=attention, attention_kernels=attention_kernels,
              policy=policy, rngs=rngs)
    if mode == "per_attribute":
      self.heads = nnx.Dict({f: _Trunk(in_features, n, **kw) for f, n in zip(FIELDS, self.sizes)})
    else:
      self.heads = _Trunk(in_features, self.sizes.total, **kw)

  def __call__(self, x: jax.Array) -> Coefficients:
    if self.mode == "shared":
      return Coefficients.from_flat(self.heads(x), self.sizes)
    # Without attention in the heads all heads share one pooled vector: pool once.
    pooled = global_pool(x, self.pool) if self.heads[FIELDS[0]].attention is None else None
    return Coefficients(**{f: self.heads[f](x, pooled) for f in FIELDS})
