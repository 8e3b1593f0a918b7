"""Large-kernel attention: VAN's LKA and MAN's multi-scale LKA (MLKA), as residual refinement blocks.

Both decompose a large receptive field into a depthwise k1 x k1 convolution followed by a depthwise
k2 x k2 convolution with dilation d (radius `(k1 - 1) / 2 + d * (k2 - 1) / 2` pixels) and a 1x1
convolution that mixes channels. Defaults are the published ones (DESIGN.md):

* LKA (VAN): 5x5 -> 7x7 dilation 3 -> 1x1 (radius 11, a 23 x 23 field); `attn = LKA(x)`, `y = x * attn`.
* MLKA (MAN): channels split into three groups with (3x3, 5x5 dil 2), (5x5, 7x7 dil 3),
  (7x7, 9x9 dil 4) (radii 5, 11, 19); each group's LKA output is gated by a depthwise conv of its
  first kernel size (`LKA_i(a_i) * X_i(a_i)`).

As refinement blocks both follow MAN's residual form, all on NHWC maps `[B, H, W, C]`:

    a, v = split(1x1(LayerNorm(x)), 2)            # attention input and value, C channels each
    y    = x + scale * 1x1(v * attention(a))      # scale: per-channel, initialised to 0

so a freshly built block is the identity and the network starts as its plain backbone. Kernel sizes
and dilations are constructor arguments (`kernels=((k1, k2, d), ...)`, one triple per group).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from msma_jax.models.layers import ZEROS, Policy, split_channels, split_sizes

LKA_KERNELS = ((5, 7, 3),)
MLKA_KERNELS = ((3, 5, 2), (5, 7, 3), (7, 9, 4))


def lka_radius(k1: int, k2: int, dilation: int) -> int:
  """Pixels a depthwise k1 conv followed by a depthwise k2 conv with `dilation` reaches per side."""
  return (k1 - 1) // 2 + dilation * (k2 - 1) // 2


def _check_kernels(kernels: Sequence[Sequence[int]], what: str) -> tuple[tuple[int, int, int], ...]:
  out = []
  for t in kernels:
    if len(t) != 3 or any(int(v) != v or v < 1 for v in t) or t[0] % 2 == 0 or t[1] % 2 == 0:
      raise ValueError(f"{what}: kernel group {tuple(t)} must be (odd k1, odd k2, dilation >= 1)")
    out.append(tuple(int(v) for v in t))
  if not out:
    raise ValueError(f"{what}: needs at least one (k1, k2, dilation) group")
  return tuple(out)


class LargeKernel(nnx.Module):
  """Depthwise k1 -> depthwise k2 (dilated) -> 1x1: the decomposed large-kernel map of one group."""

  def __init__(self, features: int, k1: int, k2: int, dilation: int, *, policy: Policy,
               rngs: nnx.Rngs):
    self.dw = policy.depthwise(features, k1, rngs=rngs)
    self.dw_dilated = policy.depthwise(features, k2, dilation=dilation, rngs=rngs)
    self.pw = policy.conv(features, features, 1, use_bias=True, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.pw(self.dw_dilated(self.dw(x)))


class LKA(nnx.Module):
  """VAN's large-kernel attention map, applied as a gate: `x * LargeKernel(x)` ([B, H, W, C])."""

  def __init__(self, features: int, kernels=LKA_KERNELS, *, policy: Policy, rngs: nnx.Rngs):
    kernels = _check_kernels(kernels, "LKA")
    if len(kernels) != 1:
      raise ValueError(f"LKA takes one (k1, k2, dilation) group, got {len(kernels)}: {kernels}")
    self.kernels = kernels
    self.kernel = LargeKernel(features, *kernels[0], policy=policy, rngs=rngs)

  def attention(self, x: jax.Array) -> jax.Array:
    return self.kernel(x)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x * self.attention(x)


class MultiScaleLKA(nnx.Module):
  """MAN's multi-scale attention map: per channel group `LargeKernel_i(a_i) * dwconv_k1(a_i)`.

  `attention(a)` returns the gated map `[B, H, W, C]` (groups concatenated in order);
  `__call__(x) = x * attention(x)` mirrors `LKA`.
  """

  def __init__(self, features: int, kernels=MLKA_KERNELS, *, policy: Policy, rngs: nnx.Rngs):
    self.kernels = _check_kernels(kernels, "MLKA")
    self.group_sizes = tuple(split_sizes(features, len(self.kernels)))
    self.large = nnx.List([LargeKernel(c, k1, k2, d, policy=policy, rngs=rngs)
                           for c, (k1, k2, d) in zip(self.group_sizes, self.kernels)])
    self.gates = nnx.List([policy.depthwise(c, k1, rngs=rngs)
                           for c, (k1, _, _) in zip(self.group_sizes, self.kernels)])

  def group_attention(self, i: int, a: jax.Array) -> jax.Array:
    """Gated large-kernel map of group i for its channels `a` ([B, H, W, group_sizes[i]])."""
    return self.large[i](a) * self.gates[i](a)

  def attention(self, x: jax.Array) -> jax.Array:
    parts = split_channels(x, self.group_sizes)
    return jnp.concatenate([self.group_attention(i, p) for i, p in enumerate(parts)], axis=-1)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x * self.attention(x)


class AttentionBlock(nnx.Module):
  """Residual refinement `x + scale * 1x1(v * attn(a))`, `[a, v] = 1x1(LayerNorm(x))`.

  kind: "lka" or "mlka"; kernels: (k1, k2, dilation) groups (one for LKA, any number for MLKA);
  scale_init: initial per-channel output scale (0: the block starts as the identity).
  """

  def __init__(self, features: int, kind: str, kernels=None, *, scale_init: float = 0.0,
               policy: Policy, rngs: nnx.Rngs):
    if kind == "lka":
      self.attn = LKA(features, LKA_KERNELS if kernels is None else kernels, policy=policy,
                      rngs=rngs)
    elif kind == "mlka":
      self.attn = MultiScaleLKA(features, MLKA_KERNELS if kernels is None else kernels,
                                policy=policy, rngs=rngs)
    else:
      raise ValueError(f"unknown attention kind '{kind}' (known: 'lka', 'mlka')")
    self.kind = kind
    self.features = features
    self.norm = policy.layer_norm(features, rngs=rngs)
    self.proj_in = policy.conv(features, 2 * features, 1, use_bias=True, rngs=rngs)
    self.proj_out = policy.conv(features, features, 1, use_bias=True, rngs=rngs)
    init = ZEROS if scale_init == 0 else nnx.initializers.constant(scale_init)
    self.scale = nnx.Param(policy.annotate(init, 1, None)(rngs.params(), (features,),
                                                          policy.param_dtype))

  @property
  def radius(self) -> int:
    """Pixels of the input each output pixel sees on each side (largest group)."""
    return max(lka_radius(*k) for k in self.attn.kernels)

  def __call__(self, x: jax.Array) -> jax.Array:
    a, v = jnp.split(self.proj_in(self.norm(x)), 2, axis=-1)
    y = self.proj_out(v * self.attn.attention(a))
    return x + self.scale[...].astype(y.dtype) * y
