"""Layer factories shared by the encoder: one place for dtypes, initialisers and sharding annotations.

Every convolution and dense layer of the encoder is made here so that three policies hold everywhere:

* numerics: `dtype` is the compute dtype (float32 or bfloat16), `param_dtype` the storage dtype of
  parameters (float32; bf16 compute keeps float32 master weights for the optimiser);
* layout: activations are NHWC `[B, H, W, C]`, kernels HWIO `[kh, kw, C_in / groups, C_out]`;
  padding is explicit and symmetric (`dilation * (k - 1) / 2` per side), which is what PyTorch's
  `padding=k // 2` does and what imported weights need (XLA's "SAME" pads stride-2 convolutions
  asymmetrically);
* sharding: kernels carry a partition annotation (`nnx.with_partitioning`); with `shard_params`
  the output-channel axis of convolutions and the input axis of dense layers map to the `fsdp` mesh
  axis, otherwise every axis is `None` (replicated). Annotations are metadata only (no mesh is
  needed to build a model); `msma_jax.models.sharding` places the parameters on a mesh.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from msma_jax.models.batchnorm import BatchNorm
from msma_jax.models.conv import conv2d, resolve_impl


def bucketed_normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32,
                    scale: float = 1.0) -> jax.Array:
  """`scale` x standard-normal samples of `shape`: the first prod(shape) of a power-of-two draw.

  Why: XLA compiles one random-number kernel per distinct output shape, which made building a
  ResNet-50 on the CPU take seconds of compilation per new layer shape; drawing from
  power-of-two-long vectors needs one kernel per length bucket (about 20 for any model). The same
  code runs eagerly and under `jit`/`eval_shape`, so both give the same values for the same key.
  """
  n = math.prod(shape)
  size = 1 << max(n - 1, 0).bit_length()
  return _prefix(jax.random.normal(key, (size,), jnp.float32), tuple(shape), dtype, scale)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _prefix(flat: jax.Array, shape: tuple[int, ...], dtype, scale) -> jax.Array:
  """scale * flat[:prod(shape)] reshaped, as one small compiled computation per shape."""
  return (flat[:math.prod(shape)].reshape(shape) * scale).astype(dtype)


def scaled_normal(gain: float, mode: str):
  """Normal initialiser with variance gain / fan (He init for gain 2), fan from an HWIO/IO shape.

  mode "fan_in": receptive field x input channels; "fan_out": receptive field x output channels.
  """
  def init(key, shape, dtype=jnp.float32):
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    fan = receptive * (shape[-2] if mode == "fan_in" else shape[-1])
    return bucketed_normal(key, shape, dtype, math.sqrt(gain / fan))
  return init


# torchvision's ResNet initialisation: kaiming normal, fan-out, ReLU gain.
CONV_INIT = scaled_normal(2.0, "fan_out")
# Depthwise kernels [k, k, 1, C]: scale by the k*k taps each output sees.
DEPTHWISE_INIT = scaled_normal(2.0, "fan_in")
DENSE_INIT = scaled_normal(1.0, "fan_in")        # LeCun normal
ZEROS = nnx.initializers.zeros_init()
ONES = nnx.initializers.ones_init()

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class Policy:
  """Numeric and sharding policy the encoder's layers are built with.

  dtype: compute dtype of activations; param_dtype: dtype parameters are stored in.
  shard_params: annotate kernels with `fsdp_axis` (else replicated annotations).
  bn_momentum: running-statistics decay (PyTorch's momentum 0.1 == 0.9 here); bn_epsilon: 1e-5.
  conv_impl: "auto" | "xla" | "matmul", how convolutions run (msma_jax.models.conv).
  """
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  shard_params: bool = False
  fsdp_axis: str = "fsdp"
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  conv_impl: str = "auto"

  def __post_init__(self):
    resolve_impl(self.conv_impl)       # fails early on an unknown name

  def annotate(self, init, ndim: int, shard_axis: int | None):
    """Wraps `init` with a partition annotation: `fsdp_axis` on `shard_axis` or all `None`."""
    spec = [None] * ndim
    if self.shard_params and shard_axis is not None:
      spec[shard_axis] = self.fsdp_axis
    # eager_sharding=False: the annotation is recorded, placement waits for a mesh (sharding.py).
    return nnx.with_partitioning(init, tuple(spec), eager_sharding=False)

  def conv(self, in_features: int, out_features: int, kernel: int, *, stride: int = 1,
           dilation: int = 1, groups: int = 1, use_bias: bool = False, kernel_init=None,
           bias_init=ZEROS, rngs: nnx.Rngs) -> "Conv2D":
    """k x k convolution with symmetric padding `dilation * (k - 1) // 2` (k odd or 1)."""
    if kernel_init is None:
      kernel_init = DEPTHWISE_INIT if groups > 1 and groups == in_features else CONV_INIT
    return Conv2D(in_features, out_features, kernel, stride=stride, dilation=dilation,
                  groups=groups, use_bias=use_bias, kernel_init=kernel_init,
                  bias_init=bias_init, policy=self, rngs=rngs)

  def depthwise(self, features: int, kernel: int, *, dilation: int = 1, use_bias: bool = True,
                rngs: nnx.Rngs) -> "Conv2D":
    """Depthwise k x k convolution (one filter per channel), with bias like VAN/MAN."""
    return self.conv(features, features, kernel, dilation=dilation, groups=features,
                     use_bias=use_bias, rngs=rngs)

  def batch_norm(self, features: int, *, scale_init=ONES, rngs: nnx.Rngs) -> BatchNorm:
    """Batch norm over [B, H, W]; starts in training mode (`model.eval()` switches)."""
    return BatchNorm(features, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                     dtype=self.dtype, param_dtype=self.param_dtype, scale_init=scale_init,
                     rngs=rngs)

  def layer_norm(self, features: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """Layer norm over channels of each pixel (MAN's channels-first LayerNorm in NHWC)."""
    return nnx.LayerNorm(features, epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
                         rngs=rngs)

  def dense(self, in_features: int, out_features: int, *, zero_init: bool = False,
            rngs: nnx.Rngs) -> nnx.Linear:
    """Dense layer; `zero_init` zeros kernel and bias (the heads' final layers: mean face first)."""
    return nnx.Linear(in_features, out_features,
                      kernel_init=self.annotate(ZEROS if zero_init else DENSE_INIT, 2, 0),
                      bias_init=self.annotate(ZEROS, 1, None),
                      dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)


class Conv2D(nnx.Module):
  """NHWC convolution: `kernel` [k, k, C_in / groups, C_out] (HWIO), optional `bias` [C_out].

  Same parameters and numbers as `nnx.Conv` with explicit symmetric padding; the computation is
  `conv.conv2d` with the policy's implementation (matrix products on the CPU, XLA elsewhere).
  """

  def __init__(self, in_features: int, out_features: int, kernel: int, *, stride: int = 1,
               dilation: int = 1, groups: int = 1, use_bias: bool = False, kernel_init,
               bias_init=ZEROS, policy: Policy, rngs: nnx.Rngs):
    if kernel % 2 != 1:
      raise ValueError(f"kernel size {kernel}: only odd kernel sizes keep the grid centred")
    if in_features % groups or out_features % groups:
      raise ValueError(f"{in_features} -> {out_features} channels do not split into {groups} "
                       "groups")
    shape = (kernel, kernel, in_features // groups, out_features)
    self.kernel = nnx.Param(policy.annotate(kernel_init, 4, 3)(rngs.params(), shape,
                                                                policy.param_dtype))
    self.bias = (nnx.Param(policy.annotate(bias_init, 1, None)(rngs.params(), (out_features,),
                                                                policy.param_dtype))
                 if use_bias else nnx.data(None))
    self.in_features, self.out_features = in_features, out_features
    self.stride, self.dilation, self.groups = stride, dilation, groups
    self.dtype, self.impl = policy.dtype, policy.conv_impl

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, H, W, C_in] -> [B, ceil(H / stride), ceil(W / stride), C_out] in the compute dtype."""
    y = conv2d(x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride,
               self.dilation, self.groups, self.impl)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class ConvBN(nnx.Module):
  """Convolution (no bias) -> batch norm -> optional ReLU; the ResNet/fusion unit."""

  def __init__(self, in_features: int, out_features: int, kernel: int, *, stride: int = 1,
               relu: bool = True, bn_scale_init=ONES, policy: Policy, rngs: nnx.Rngs):
    self.conv = policy.conv(in_features, out_features, kernel, stride=stride, rngs=rngs)
    self.bn = policy.batch_norm(out_features, scale_init=bn_scale_init, rngs=rngs)
    self.relu = relu

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.bn(self.conv(x))
    return jax.nn.relu(x) if self.relu else x


def split_sizes(total: int, parts: int) -> list[int]:
  """Near-equal contiguous split of `total` channels into `parts` groups (first ones larger).

  MAN splits channels into three equal groups; widths such as 256 or 2048 are not divisible by 3,
  so the remainder goes to the first groups (256 -> 86, 85, 85).
  """
  if parts <= 0 or total < parts:
    raise ValueError(f"cannot split {total} channels into {parts} non-empty groups")
  base, extra = divmod(total, parts)
  return [base + (1 if i < extra else 0) for i in range(parts)]


def split_channels(x: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
  """Splits the last axis of `x` into consecutive chunks of the given sizes."""
  out, start = [], 0
  for s in sizes:
    out.append(x[..., start:start + s])
    start += s
  return out
