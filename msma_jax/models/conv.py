"""2-D convolution, NHWC x HWIO, with implementations chosen for the backend.

All implementations compute the same function: `y[b, i, j, o] = sum_{u, v, c} x_pad[b, s*i + d*u,
s*j + d*v, c] w[u, v, c, o]` with symmetric zero padding `d * (k - 1) / 2` (k odd), stride s,
dilation d, and for depthwise kernels (`[k, k, 1, C]`, groups = C) one filter per channel.

* "xla": `lax.conv_general_dilated` for everything (the right choice where XLA calls cuDNN or the
  TPU's convolution units).
* "matmul" (the CPU choice): 1x1 convolutions as one `[B*H*W, C_in] @ [C_in, C_out]` matrix
  product, depthwise convolutions as a sum over the k*k shifted views of the input, each times
  its per-channel tap, stride-2 convolutions of <= 4 input channels (the stem) on 2 x 2 pixel
  blocks (`space_to_depth_conv`), dense k x k convolutions whose output map has at most
  `PATCH_CONV_MAX_PIXELS` pixels as one matrix product over gathered patches (`patch_conv`); other
  convolutions through XLA. Why: XLA's CPU backend runs the weight gradient of a 1x1 convolution
  about 5x slower than the equivalent matrix product, grouped (depthwise) convolutions 5-10x slower
  than the fused sum of shifted products, and convolutions on small maps up to 28x slower (a 3x3,
  512-channel convolution on a 2 x 2 map, ResNet's C5 at 64 x 64 input: 282 ms forward + backward
  against 10 ms as a matrix product; at 7 x 7, C5 at 224 x 224: 38 vs 32 ms), measured with
  benchmarks/bench_encoder.py and benchmarks/bench_conv.py; docs/BENCHMARKS.md.
* "auto": "matmul" on the CPU backend, "xla" elsewhere (decided when the function is traced).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "matmul")
# Output maps up to 7 x 7 (ResNet's C5 at 224 x 224) take `patch_conv` on the CPU: measured faster
# than XLA's convolution there, equal at 6 x 6 to 8 x 8, slower above (the patch copy grows as k²).
PATCH_CONV_MAX_PIXELS = 49


def resolve_impl(impl: str) -> str:
  if impl not in CONV_IMPLS:
    raise ValueError(f"unknown convolution implementation {impl!r} (known: {CONV_IMPLS})")
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return impl


def xla_conv(x: jax.Array, w: jax.Array, stride: int = 1, dilation: int = 1,
             groups: int = 1) -> jax.Array:
  """`lax.conv_general_dilated` with symmetric padding; x [B, H, W, C], w [k, k, C/groups, O]."""
  pad = dilation * (w.shape[0] - 1) // 2
  return lax.conv_general_dilated(
      x, w, (stride, stride), ((pad, pad), (pad, pad)), rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def pointwise_conv(x: jax.Array, w: jax.Array, stride: int = 1) -> jax.Array:
  """1x1 convolution as a matrix product; x [B, H, W, C], w [1, 1, C, O] -> [B, H', W', O]."""
  if stride > 1:
    x = x[:, ::stride, ::stride]
  b, h, wd, c = x.shape
  y = jnp.dot(x.reshape(b * h * wd, c), w.reshape(c, w.shape[-1]))
  return y.reshape(b, h, wd, w.shape[-1])


def _output_size(size: int, k: int, stride: int, dilation: int) -> int:
  pad = dilation * (k - 1) // 2
  return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _tap_views(x: jax.Array, kernel: int, stride: int = 1, dilation: int = 1,
               fill=0.0) -> list[jax.Array]:
  """The k*k views of `x` padded by dilation * (k - 1) / 2 with `fill` that tap (u, v) of every
  output pixel reads, row-major tap order; each [B, H', W', C]."""
  pad = dilation * (kernel - 1) // 2
  b, h, w, c = x.shape
  ho, wo = _output_size(h, kernel, stride, dilation), _output_size(w, kernel, stride, dilation)
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=fill)
  span_h, span_w = (ho - 1) * stride + 1, (wo - 1) * stride + 1
  return [lax.slice(xp, (0, u * dilation, v * dilation, 0),
                    (b, u * dilation + span_h, v * dilation + span_w, c), (1, stride, stride, 1))
          for u in range(kernel) for v in range(kernel)]


def patch_conv(x: jax.Array, w: jax.Array, stride: int = 1, dilation: int = 1) -> jax.Array:
  """Dense k x k convolution as one matrix product over gathered patches ("im2col").

  x [B, H, W, C], w [k, k, C, O] -> [B, H', W', O]: the k² shifted (strided, dilated) views of the
  padded input are concatenated along channels, `[B*H'*W', k²C] @ [k²C, O]`. The copy is k² times
  the output map, so this is only worth it on small maps (`PATCH_CONV_MAX_PIXELS`).
  """
  k, c, o = w.shape[0], x.shape[-1], w.shape[-1]
  patches = jnp.concatenate(_tap_views(x, k, stride, dilation), axis=-1)
  b, ho, wo, _ = patches.shape
  y = jnp.dot(patches.reshape(b * ho * wo, k * k * c), w.reshape(k * k * c, o))
  return y.reshape(b, ho, wo, o)


def _tap_reads_input(size: int, tap: int, kernel: int, stride: int, dilation: int) -> bool:
  """Whether tap `tap` along an axis of `size` input pixels reads any of them (not only padding)."""
  pad = dilation * (kernel - 1) // 2
  first = tap * dilation - pad                     # input index output pixel 0 reads
  i = max(0, -(first // stride))                   # first output pixel reading index >= 0
  return i < _output_size(size, kernel, stride, dilation) and first + i * stride < size


def depthwise_conv(x: jax.Array, w: jax.Array, stride: int = 1, dilation: int = 1) -> jax.Array:
  """Depthwise convolution as a sum of shifted views; x [B, H, W, C], w [k, k, 1, C].

  Taps whose view holds only padding are left out (their terms are zero): large dilated kernels on
  small maps (MLKA's 9 x 9, dilation 4, on a 4 x 4 grid) read the input with a few of their taps.
  """
  k = w.shape[0]
  out = None
  for t, view in enumerate(_tap_views(x, k, stride, dilation)):
    u, v = divmod(t, k)
    if not (_tap_reads_input(x.shape[1], u, k, stride, dilation)
            and _tap_reads_input(x.shape[2], v, k, stride, dilation)):
      continue
    term = view * w[u, v, 0]
    out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: jax.Array, kernel: int = 3, stride: int = 2) -> jax.Array:
  """k x k max pooling with -inf padding (k - 1) / 2: PyTorch's MaxPool2d(k, s, k // 2).

  x [B, H, W, C] -> [B, (H - 1) // s + 1, (W - 1) // s + 1, C]. The gradient goes to the first
  maximal input of each window in row-major order, as in PyTorch. Written as an elementwise max of
  shifted views with a hand-written gradient (the index of the winning tap, then one padded
  scatter per tap) because XLA's CPU select-and-scatter, the gradient of `nnx.max_pool`, took
  about 10x longer on ResNet's 112 x 112 x 64 pooling, and the automatic gradient of the views
  form recomputes the max chain for every tap.
  """
  return _max_pool_fwd(x, kernel, stride)[0]


def _max_pool_fwd(x, kernel, stride):
  views = _tap_views(x, kernel, stride, fill=-jnp.inf)
  out, idx = views[0], jnp.zeros(views[0].shape, jnp.int8)
  for t, view in enumerate(views[1:], start=1):
    better = view > out                # strict: ties keep the earlier tap
    out = jnp.where(better, view, out)
    idx = jnp.where(better, jnp.int8(t), idx)
  return out, (idx, x.shape)


def _max_pool_bwd(kernel, stride, res, dy):
  idx, shape = res
  pad = (kernel - 1) // 2
  _, h, w, _ = shape
  ho, wo = dy.shape[1:3]
  zero = jnp.zeros((), dy.dtype)
  dx = None
  for t in range(kernel * kernel):
    u, v = divmod(t, kernel)
    g = jnp.where(idx == t, dy, zero)
    # Tap (u, v) of output (i, j) reads padded input (s*i + u, s*j + v): scatter back by padding.
    cfg = ((0, 0, 0),
           (u - pad, h + pad - u - (ho - 1) * stride - 1, stride - 1),
           (v - pad, w + pad - v - (wo - 1) * stride - 1, stride - 1),
           (0, 0, 0))
    term = lax.pad(g, zero, cfg)
    dx = term if dx is None else dx + term
  return (dx,)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def space_to_depth_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """Stride-2 k x k convolution (k odd) as a stride-1 ceil(k/2)-sized one on 2x2 pixel blocks.

  x [B, H, W, C], w [k, k, C, O] -> [B, ceil(H/2), ceil(W/2), O], equal to `xla_conv(x, w, 2)`.
  The kernel is zero-extended to k + 1 taps and both are regrouped so that each output reads
  (k + 1) / 2 blocks of 2 x 2 x C values: the ResNet stem (7 x 7, 3 channels) becomes a 4 x 4
  convolution over 12 channels, which the CPU runs several times faster than 3-channel input.
  """
  k, _, c, o = w.shape
  b, h, wd, _ = x.shape
  pad = (k - 1) // 2
  ho, wo = _output_size(h, k, 2, 1), _output_size(wd, k, 2, 1)
  kb = (k + 1) // 2                               # taps per axis on the block grid
  hs, ws = ho + kb - 1, wo + kb - 1               # block rows / columns the output reads
  xp = jnp.pad(x, ((0, 0), (pad, 2 * hs - h - pad), (pad, 2 * ws - wd - pad), (0, 0)))
  xs = xp.reshape(b, hs, 2, ws, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hs, ws, 4 * c)
  w8 = jnp.pad(w, ((0, 2 * kb - k), (0, 2 * kb - k), (0, 0), (0, 0)))
  ws_ = w8.reshape(kb, 2, kb, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(kb, kb, 4 * c, o)
  return lax.conv_general_dilated(xs, ws_, (1, 1), "VALID",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv2d(x: jax.Array, w: jax.Array, stride: int = 1, dilation: int = 1, groups: int = 1,
           impl: str = "auto") -> jax.Array:
  """NHWC convolution with HWIO kernel `w` (see the module docstring); returns [B, H', W', O]."""
  if resolve_impl(impl) == "matmul":
    if groups == 1 and w.shape[0] == 1 and w.shape[1] == 1:
      return pointwise_conv(x, w, stride)
    if groups == 1 and stride == 2 and dilation == 1 and x.shape[-1] <= 4:
      return space_to_depth_conv(x, w)
    if groups > 1 and groups == x.shape[-1] == w.shape[-1] and w.shape[2] == 1:
      return depthwise_conv(x, w, stride, dilation)
    k = w.shape[0]
    if (groups == 1 and _output_size(x.shape[1], k, stride, dilation)
        * _output_size(x.shape[2], k, stride, dilation) <= PATCH_CONV_MAX_PIXELS):
      return patch_conv(x, w, stride, dilation)
  return xla_conv(x, w, stride, dilation, groups)
