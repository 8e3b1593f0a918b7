"""Convolution implementations: matrix-product / shifted-sum forms equal XLA's convolution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from msma_jax.models.conv import conv2d, depthwise_conv, pointwise_conv, resolve_impl, xla_conv
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
    (13, 9, 3, 3, 7, 1, 2, 3),
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
