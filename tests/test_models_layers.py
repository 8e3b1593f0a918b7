"""Layers with CPU-specific forms: convolutions, max pooling, batch norm, against definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from msma_jax.models.batchnorm import BatchNorm
from msma_jax.models.conv import (PATCH_CONV_MAX_PIXELS, conv2d, depthwise_conv, max_pool,
                                  pointwise_conv, resolve_impl, xla_conv)
from msma_jax.models.layers import Policy


def numpy_conv(x, w, stride, dilation, groups):
  """Direct loops over output pixels and taps (float64), the definition in conv.py's docstring."""
  b, h, wd, c = x.shape
  k, _, cg, o = w.shape
  pad = dilation * (k - 1) // 2
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
  wo = (wd + 2 * pad - dilation * (k - 1) - 1) // stride + 1
  out = np.zeros((b, ho, wo, o))
  og = o // groups
  for i in range(ho):
    for j in range(wo):
      for u in range(k):
        for v in range(k):
          pix = xp[:, i * stride + u * dilation, j * stride + v * dilation]      # [b, c]
          for g in range(groups):
            out[:, i, j, g * og:(g + 1) * og] += pix[:, g * cg:(g + 1) * cg] @ w[u, v, :, g * og:(g + 1) * og]
  return out


CASES = [  # (H, W, C_in, C_out, k, stride, dilation, groups)
    (9, 7, 5, 6, 1, 1, 1, 1), (9, 7, 5, 6, 1, 2, 1, 1), (9, 8, 4, 3, 3, 2, 1, 1),
    (11, 10, 6, 6, 3, 1, 1, 6), (11, 10, 6, 6, 5, 2, 1, 6), (12, 12, 4, 4, 3, 1, 4, 4),
    (13, 9, 3, 3, 7, 1, 2, 3), (20, 17, 3, 5, 7, 2, 1, 1), (9, 10, 2, 4, 3, 2, 1, 1),
    # dense 3x3 on small output maps (patch_conv on the CPU) and one large enough for XLA's
    (2, 2, 8, 8, 3, 1, 1, 1), (4, 4, 6, 7, 3, 2, 1, 1), (5, 4, 6, 5, 3, 1, 2, 1),
    (12, 10, 5, 6, 3, 1, 1, 1),
    # depthwise kernels wider than the map: taps reading only padding are skipped (MLKA at 64²)
    (4, 4, 3, 3, 9, 1, 4, 3), (4, 5, 2, 2, 7, 1, 3, 2), (3, 5, 2, 2, 5, 2, 2, 2),
]


@pytest.mark.parametrize("h, w, ci, co, k, s, d, g", CASES)
def test_every_implementation_matches_the_definition(h, w, ci, co, k, s, d, g):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, h, w, ci))
  kern = rng.normal(size=(k, k, ci // g, co))
  ref = numpy_conv(x, kern, s, d, g)
  xj, kj = jnp.asarray(x, jnp.float32), jnp.asarray(kern, jnp.float32)
  for impl in ("xla", "matmul"):
    got = np.asarray(conv2d(xj, kj, s, d, g, impl))
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4, err_msg=impl)
  # Gradients (both arguments) agree between the implementations.
  cot = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
  grads = [jax.grad(lambda a, b: jnp.sum(conv2d(a, b, s, d, g, impl) * cot), argnums=(0, 1))(xj, kj)
           for impl in ("xla", "matmul")]
  for a, b in zip(*grads):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size, stride, small", [(7, 1, True), (8, 1, False), (14, 2, True),
                                                 (16, 2, False)])
def test_matmul_impl_gathers_patches_only_on_small_output_maps(size, stride, small):
  """The "matmul" form computes 3x3 convolutions with <= 49 output pixels as one dot (XLA's CPU
  convolution is up to 40x slower there) and leaves larger maps to XLA's convolution."""
  x, w = jnp.ones((2, size, size, 8)), jnp.ones((3, 3, 8, 4))
  out = ((size - 1) // stride + 1) ** 2
  assert (out <= PATCH_CONV_MAX_PIXELS) == small
  jaxpr = str(jax.make_jaxpr(lambda a, b: conv2d(a, b, stride, impl="matmul"))(x, w))
  assert ("conv_general_dilated" not in jaxpr) == small
  assert ("dot_general" in jaxpr) == small


def test_dispatch_and_module():
  assert resolve_impl("auto") == ("matmul" if jax.default_backend() == "cpu" else "xla")
  with pytest.raises(ValueError, match="unknown convolution implementation 'cudnn'"):
    resolve_impl("cudnn")
  with pytest.raises(ValueError, match="unknown convolution implementation"):
    Policy(conv_impl="cudnn")
  x = jnp.ones((1, 8, 8, 4))
  assert pointwise_conv(x, jnp.ones((1, 1, 4, 2)), 2).shape == (1, 4, 4, 2)
  assert depthwise_conv(x, jnp.ones((3, 3, 1, 4)), 2, 1).shape == (1, 4, 4, 4)
  conv = Policy().conv(4, 8, 3, stride=2, use_bias=True, rngs=nnx.Rngs(0))
  assert conv.kernel.shape == (3, 3, 4, 8) and conv.bias.shape == (8,)
  y = conv(x)
  ref = xla_conv(x, conv.kernel[...], 2) + conv.bias[...]
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref), atol=1e-5)
  with pytest.raises(ValueError, match="only odd kernel sizes"):
    Policy().conv(4, 8, 4, rngs=nnx.Rngs(0))


# ---- max pooling ----------------------------------------------------------------------------------

def numpy_max_pool(x, k, s, dy):
  """Forward and gradient by loops: each window's gradient goes to its first maximum (row-major)."""
  b, h, w, c = x.shape
  p = (k - 1) // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
  ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
  y = np.zeros((b, ho, wo, c))
  dxp = np.zeros_like(xp)
  for n in range(b):
    for ch in range(c):
      for i in range(ho):
        for j in range(wo):
          win = xp[n, i * s:i * s + k, j * s:j * s + k, ch]
          u, v = np.unravel_index(np.argmax(win), win.shape)     # argmax: first maximum
          y[n, i, j, ch] = win[u, v]
          dxp[n, i * s + u, j * s + v, ch] += dy[n, i, j, ch]
  return y, dxp[:, p:p + h, p:p + w]


@pytest.mark.parametrize("shape, k, s", [((2, 9, 7, 3), 3, 2), ((1, 10, 12, 2), 3, 2),
                                         ((1, 8, 8, 2), 5, 1)])
def test_max_pool_values_and_first_max_gradient(shape, k, s):
  rng = np.random.default_rng(1)
  x = rng.normal(size=shape).astype(np.float32)
  x[0, :5, :5, 0] = 0.25                   # ties (as after a ReLU): first maximum wins
  y, vjp = jax.vjp(lambda a: max_pool(a, k, s), jnp.asarray(x))
  dy = rng.normal(size=y.shape).astype(np.float32)
  ref_y, ref_dx = numpy_max_pool(x.astype(np.float64), k, s, dy.astype(np.float64))
  np.testing.assert_array_equal(np.asarray(y), ref_y.astype(np.float32))
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(dy))[0]), ref_dx, atol=1e-6)
  np.testing.assert_array_equal(
      np.asarray(y), np.asarray(nnx.max_pool(jnp.asarray(x), (k, k), (s, s), ((k // 2,) * 2,) * 2)))


# ---- batch norm -----------------------------------------------------------------------------------

def reference_bn(x, scale, bias, eps=1e-5):
  """Batch norm written plainly (automatic differentiation gives the reference gradient)."""
  mean = x.mean(axis=(0, 1, 2))
  var = ((x - mean) ** 2).mean(axis=(0, 1, 2))
  return (x - mean) / jnp.sqrt(var + eps) * scale + bias


def test_batch_norm_matches_the_formula_and_its_gradient():
  rng = np.random.default_rng(2)
  x = jnp.asarray(3.0 + 2.0 * rng.normal(size=(4, 6, 5, 7)), jnp.float32)
  bn = BatchNorm(7, momentum=0.8, rngs=nnx.Rngs(0))
  bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, 7), jnp.float32)
  bn.bias[...] = jnp.asarray(rng.normal(size=7), jnp.float32)
  scale, bias = bn.scale[...], bn.bias[...]
  cot = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  gd, state = nnx.split(bn)

  def loss(state, x):
    y = nnx.merge(gd, state)(x)
    return jnp.sum(y * cot), y

  (_, y), (g_state, g_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(state, x)
  ref, ref_vjp = jax.vjp(reference_bn, x, scale, bias)
  r_x, r_scale, r_bias = ref_vjp(cot)
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref), atol=1e-5)
  np.testing.assert_allclose(np.asarray(g_x), np.asarray(r_x), atol=1e-5)
  np.testing.assert_allclose(np.asarray(g_state["scale"][...]), np.asarray(r_scale), rtol=1e-5,
                             atol=1e-4)
  np.testing.assert_allclose(np.asarray(g_state["bias"][...]), np.asarray(r_bias), rtol=1e-5,
                             atol=1e-4)
  # Running statistics: momentum * old + (1 - momentum) * batch (biased variance).
  bn(x)
  xn = np.asarray(x, np.float64)
  np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.2 * xn.mean(axis=(0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(bn.var[...]), 0.8 + 0.2 * xn.var(axis=(0, 1, 2)),
                             rtol=1e-5)
  # Eval mode normalises with the running statistics and leaves them alone.
  bn.use_running_average = True
  mean, var = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
  ref_eval = (xn - mean) / np.sqrt(var + 1e-5) * np.asarray(scale) + np.asarray(bias)
  np.testing.assert_allclose(np.asarray(bn(x)), ref_eval, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(bn.mean[...]), mean)
  # bfloat16 compute: output in bf16, statistics in float32.
  bn16 = BatchNorm(7, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  y16 = bn16(x)
  assert y16.dtype == jnp.bfloat16 and bn16.mean[...].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(reference_bn(x, 1.0, 0.0)),
                             atol=0.05)
