"""Large-kernel attention and fusion resampling: receptive fields against offset-set arithmetic."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from msma_jax.models import LKA, AttentionBlock, MultiScaleLKA, Policy, lka_radius, resample
from msma_jax.models.attention import LargeKernel
from msma_jax.models.layers import bucketed_normal, split_sizes

POLICY = Policy(conv_impl="xla")      # the CPU forms are checked against it in test_models_layers
SIZE = 48            # the grid; the largest field tested (radius 19) fits around the centre
CENTRE = SIZE // 2


def expected_support(groups):
  """Offsets (dy, dx) reached by depthwise k1 then depthwise k2 with dilation d, union of groups.

  Computed from sets: {-r1..r1} + d * {-r2..r2} per axis (a Minkowski sum), then the 2-D product.
  """
  offsets = set()
  for k1, k2, d in groups:
    axis = {a + d * b for a in range(-(k1 // 2), k1 // 2 + 1) for b in range(-(k2 // 2), k2 // 2 + 1)}
    offsets |= set(itertools.product(axis, axis))
  mask = np.zeros((SIZE, SIZE), bool)
  for dy, dx in offsets:
    mask[CENTRE + dy, CENTRE + dx] = True
  return mask


def response_support(fn, channels, channel=None, seed=0):
  """Pixels whose output changes with the centre input pixel: the JVP of a one-hot tangent.

  The tangent is exactly zero wherever the centre pixel has no path to the output, so this is the
  receptive field of fn itself. The base point and the tangent's channel mix are random so gates
  and biases are generic (an all-ones tangent would vanish in LayerNorm, which ignores shifts
  common to all channels).
  """
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(1, SIZE, SIZE, channels)), jnp.float32)
  t = np.zeros((1, SIZE, SIZE, channels), np.float32)
  if channel is None:
    t[0, CENTRE, CENTRE, :] = rng.normal(size=channels)
  else:
    t[0, CENTRE, CENTRE, channel] = 1.0
  _, dy = jax.jit(lambda x, t: jax.jvp(fn, (x,), (t,)))(x, jnp.asarray(t))
  return np.asarray(dy[0])


@pytest.mark.parametrize("k1, k2, d", [(5, 7, 3), (3, 5, 2), (7, 9, 4), (3, 5, 4), (1, 3, 5)])
def test_large_kernel_reaches_exactly_the_dilated_footprint(k1, k2, d):
  lk = LargeKernel(6, k1, k2, d, policy=POLICY, rngs=nnx.Rngs(0))
  dy = response_support(lk, 6)
  got = np.any(dy != 0, axis=-1)
  want = expected_support([(k1, k2, d)])
  np.testing.assert_array_equal(got, want)
  # The radius formula agrees with the set: e.g. VAN's 5, 7 dil 3 -> 11 (a 23 x 23 field).
  rows = np.nonzero(want.any(axis=1))[0]
  assert rows.max() - CENTRE == lka_radius(k1, k2, d)
  assert lka_radius(5, 7, 3) == 11 and lka_radius(7, 9, 4) == 19


def test_lka_gate_and_published_kernels():
  lka = LKA(4, policy=POLICY, rngs=nnx.Rngs(1))
  assert lka.kernels == ((5, 7, 3),)
  got = np.any(response_support(lka, 4) != 0, axis=-1)
  np.testing.assert_array_equal(got, expected_support([(5, 7, 3)]))
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 20, 20, 4)), jnp.float32)
  np.testing.assert_allclose(np.asarray(lka(x)), np.asarray(x * lka.attention(x)), rtol=1e-6)


def test_mlka_groups_are_separate_and_each_reaches_its_own_field():
  features = 9
  mlka = MultiScaleLKA(features, policy=POLICY, rngs=nnx.Rngs(3))
  assert mlka.kernels == ((3, 5, 2), (5, 7, 3), (7, 9, 4))
  assert mlka.group_sizes == (3, 3, 3)
  bounds = np.cumsum((0,) + mlka.group_sizes)
  for g, kernels in enumerate(mlka.kernels):
    dy = response_support(mlka.attention, features, channel=bounds[g])
    # The centre pixel of one channel of group g moves only group g's channels ...
    others = np.ones(features, bool)
    others[bounds[g]:bounds[g + 1]] = False
    assert np.all(dy[..., others] == 0)
    # ... over exactly that group's dilated footprint (the gate's k1 x k1 lies inside it).
    got = np.any(dy != 0, axis=-1)
    np.testing.assert_array_equal(got, expected_support([kernels]))


def test_mlka_uneven_channel_split_and_configurable_kernels():
  assert split_sizes(256, 3) == [86, 85, 85] and sum(split_sizes(2048, 3)) == 2048
  kernels = ((3, 5, 4), (1, 3, 5))              # footprints with holes: exactness shows
  block = AttentionBlock(7, "mlka", kernels, policy=POLICY, rngs=nnx.Rngs(4))
  assert block.attn.group_sizes == (4, 3)
  block.scale[...] = jnp.ones_like(block.scale[...])
  got = np.any(response_support(block, 7) != 0, axis=-1)
  want = expected_support(kernels)
  assert not want[CENTRE, CENTRE + 2] and want[CENTRE, CENTRE + 5]       # a hole and a tap
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind, groups", [("lka", ((5, 7, 3),)),
                                          ("mlka", ((3, 5, 2), (5, 7, 3), (7, 9, 4)))])
def test_attention_block_starts_as_identity_and_then_sees_its_field(kind, groups):
  block = AttentionBlock(12, kind, policy=POLICY, rngs=nnx.Rngs(5))
  x = jnp.asarray(np.random.default_rng(6).normal(size=(2, SIZE, SIZE, 12)), jnp.float32)
  # Per-channel scale initialised to 0: the residual block is exactly the identity ...
  assert np.all(np.asarray(block.scale[...]) == 0) and block.scale.shape == (12,)
  np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(x))
  only_centre = np.zeros((SIZE, SIZE), bool)
  only_centre[CENTRE, CENTRE] = True
  np.testing.assert_array_equal(np.any(response_support(block, 12) != 0, -1), only_centre)
  # ... and with a non-zero scale the centre pixel reaches the largest group's field.
  block.scale[...] = jnp.full((12,), 0.5)
  got = np.any(response_support(block, 12) != 0, axis=-1)
  np.testing.assert_array_equal(got, expected_support(groups))
  assert block.radius == max(lka_radius(*g) for g in groups)


def test_bad_kernel_groups_fail_clearly():
  with pytest.raises(ValueError, match=r"kernel group \(4, 7, 3\) must be"):
    MultiScaleLKA(6, ((4, 7, 3),), policy=POLICY, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="LKA takes one"):
    AttentionBlock(6, "lka", ((5, 7, 3), (3, 5, 2)), policy=POLICY, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown attention kind 'gc'"):
    AttentionBlock(6, "gc", policy=POLICY, rngs=nnx.Rngs(0))


# ---- resampling to the target grid ----------------------------------------------------------------

def bilinear_reference(x, out_h, out_w):
  """Half-pixel-centre bilinear resize with edge clamping (PyTorch align_corners=False), in NumPy."""
  n, h, w, c = x.shape
  def coords(out, size):
    src = (np.arange(out) + 0.5) * size / out - 0.5
    src = np.clip(src, 0, size - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, size - 1)
    return lo, hi, src - lo
  y0, y1, fy = coords(out_h, h)
  x0, x1, fx = coords(out_w, w)
  top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
  bot = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
  return top * (1 - fy)[None, :, None, None] + bot * fy[None, :, None, None]


def test_resample_down_is_cell_mean_and_up_is_bilinear():
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, 8, 12, 3)).astype(np.float32)
  down = np.asarray(resample(jnp.asarray(x), (2, 3)))
  np.testing.assert_allclose(down, x.reshape(2, 2, 4, 3, 4, 3).mean(axis=(2, 4)), atol=1e-6)
  up = np.asarray(resample(jnp.asarray(x), (16, 48)))
  np.testing.assert_allclose(up, bilinear_reference(x.astype(np.float64), 16, 48), atol=1e-5)
  near = np.asarray(resample(jnp.asarray(x), (16, 24), "nearest"))
  np.testing.assert_array_equal(near, x.repeat(2, axis=1).repeat(2, axis=2))
  assert resample(jnp.asarray(x), (5, 7)).shape == (2, 5, 7, 3)        # non-integer ratio


def test_bucketed_initialiser_statistics_and_jit_agreement():
  key = jax.random.key(0)
  w = bucketed_normal(key, (3, 3, 256, 512), scale=0.1)
  assert w.shape == (3, 3, 256, 512)
  assert abs(float(w.std()) - 0.1) < 1e-3 and abs(float(w.mean())) < 1e-3
  np.testing.assert_array_equal(np.asarray(jax.jit(bucketed_normal, static_argnums=(1,))(
      key, (3, 3, 256, 512), scale=0.1)), np.asarray(w))
  # Different shapes from one key share the draw's prefix: same bucket, same numbers.
  a, b = bucketed_normal(key, (100,)), bucketed_normal(key, (10, 11))
  np.testing.assert_array_equal(np.asarray(a)[:100], np.asarray(b).reshape(-1)[:100])
