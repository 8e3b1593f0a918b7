"""ArcFace's IResNet (insightface `arcface_torch` iresnet18/34/50/100/200) as a Flax NNX module.

Architecture (input 112x112 RGB, every stage halves the resolution):

    conv3x3 (64) -> bn -> prelu
    4 stages of IBasicBlocks, widths 64/128/256/512, first block of each stage with stride 2:
        out = bn3(conv3x3/s(prelu(bn2(conv3x3(bn1(x)))))) + shortcut
        shortcut = x, or bn(conv1x1/s(x)) when the stride or width changes
    bn -> flatten (C, H, W order) -> fc (512*7*7 -> 512) -> bn (features)

Blocks per stage: r18 (2,2,2,2), r34 (3,4,6,3), r50 (3,4,14,3), r100 (3,13,30,3), r200 (6,26,60,6).
Batch norms are inference-time per-channel affines; the ones an ONNX export folded into the
preceding convolution appear as conv biases with identity affines. The fc weight is stored with its
rows permuted to NHWC flatten order, so no transpose is needed at run time.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from msma_jax.models.identity import layers

IRESNET_DEPTHS: dict[tuple[int, int, int, int], str] = {
    (2, 2, 2, 2): "r18", (3, 4, 6, 3): "r34", (3, 4, 14, 3): "r50", (3, 13, 30, 3): "r100",
    (6, 26, 60, 6): "r200"}


@dataclasses.dataclass(frozen=True)
class IResNetSpec:
  """Shape of an IResNet: blocks and widths per stage, embedding size, input size (pixels)."""
  stage_blocks: tuple[int, int, int, int]
  widths: tuple[int, int, int, int] = (64, 128, 256, 512)
  stem_width: int = 64
  embedding: int = 512
  input_size: int = 112

  @property
  def depth_name(self) -> str | None:
    return IRESNET_DEPTHS.get(tuple(self.stage_blocks))

  @property
  def fc_spatial(self) -> int:
    return self.input_size // 16

  def param_shapes(self) -> dict[str, tuple[int, ...]]:
    """{name: shape} of every parameter `IResNet` expects."""
    s = {"input/mean": (3,), "input/scale": (3,)}

    def conv_affine(key, k, cin, cout):
      s.update({f"{key}/weight": (k, k, cin, cout), f"{key}/bias": (cout,),
                f"{key}/scale": (cout,), f"{key}/shift": (cout,)})
    conv_affine("stem", 3, 3, self.stem_width)
    s["stem/prelu"] = (self.stem_width,)
    cin = self.stem_width
    for i, (cout, stride) in enumerate(self.block_plan()):
      s.update({f"blocks/{i}/bn1/scale": (cin,), f"blocks/{i}/bn1/shift": (cin,)})
      conv_affine(f"blocks/{i}/conv1", 3, cin, cout)
      s[f"blocks/{i}/prelu"] = (cout,)
      conv_affine(f"blocks/{i}/conv2", 3, cout, cout)
      if stride != 1 or cin != cout:
        conv_affine(f"blocks/{i}/downsample", 1, cin, cout)
      cin = cout
    n_fc = cin * self.fc_spatial ** 2
    s.update({"bn2/scale": (cin,), "bn2/shift": (cin,), "fc/weight": (n_fc, self.embedding),
              "fc/bias": (self.embedding,), "features/scale": (self.embedding,),
              "features/shift": (self.embedding,)})
    return s

  def block_plan(self) -> list[tuple[int, int]]:
    """(output width, stride) of every block in order."""
    return [(w, 2 if j == 0 else 1) for n, w in zip(self.stage_blocks, self.widths)
            for j in range(n)]


class _ConvAffine(nnx.Module):
  def __init__(self, p: Mapping[str, np.ndarray], key: str, stride: int):
    self.weight = layers.Frozen(jnp.asarray(p[f"{key}/weight"], jnp.float32))
    self.bias = layers.Frozen(jnp.asarray(p[f"{key}/bias"], jnp.float32))
    self.scale = layers.Frozen(jnp.asarray(p[f"{key}/scale"], jnp.float32))
    self.shift = layers.Frozen(jnp.asarray(p[f"{key}/shift"], jnp.float32))
    self.stride = stride
    self.padding = int(p[f"{key}/weight"].shape[0]) // 2

  def __call__(self, x):
    y = layers.conv2d(x, self.weight[...], self.bias[...], self.stride, self.padding)
    return layers.channel_affine(y, self.scale[...], self.shift[...])


class _IBasicBlock(nnx.Module):
  def __init__(self, p: Mapping[str, np.ndarray], i: int, stride: int, has_downsample: bool):
    self.bn1_scale = layers.Frozen(jnp.asarray(p[f"blocks/{i}/bn1/scale"], jnp.float32))
    self.bn1_shift = layers.Frozen(jnp.asarray(p[f"blocks/{i}/bn1/shift"], jnp.float32))
    self.conv1 = _ConvAffine(p, f"blocks/{i}/conv1", 1)
    self.prelu = layers.Frozen(jnp.asarray(p[f"blocks/{i}/prelu"], jnp.float32))
    self.conv2 = _ConvAffine(p, f"blocks/{i}/conv2", stride)
    self.downsample = _ConvAffine(p, f"blocks/{i}/downsample", stride) if has_downsample else None

  def __call__(self, x):
    y = layers.channel_affine(x, self.bn1_scale[...], self.bn1_shift[...])
    y = self.conv2(layers.prelu(self.conv1(y), self.prelu[...]))
    return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nnx.Module):
  """crops [B, 112, 112, 3] RGB 0..255 -> ArcFace embeddings [B, 512] (not normalised), float32.

  params: {name: array} with the names/shapes of `spec.param_shapes()` (see `onnx_import`).
  dtype: compute dtype of the convolutions (float32 or bfloat16); fc and output stay float32.
  """

  def __init__(self, spec: IResNetSpec, params: Mapping[str, np.ndarray], *, dtype=jnp.float32):
    expected = spec.param_shapes()
    bad = [f"{k}: {tuple(np.shape(params[k])) if k in params else 'missing'} != {v}"
           for k, v in expected.items() if k not in params or tuple(np.shape(params[k])) != v]
    if bad:
      raise ValueError(f"IResNet parameters do not fit {spec}: {bad[:3]}")
    self.spec = spec
    self.input_mean = layers.Frozen(jnp.asarray(params["input/mean"], jnp.float32))
    self.input_scale = layers.Frozen(jnp.asarray(params["input/scale"], jnp.float32))
    self.stem = _ConvAffine(params, "stem", 1)
    self.stem_prelu = layers.Frozen(jnp.asarray(params["stem/prelu"], jnp.float32))
    blocks, cin = [], spec.stem_width
    for i, (cout, stride) in enumerate(spec.block_plan()):
      blocks.append(_IBasicBlock(params, i, stride, stride != 1 or cin != cout))
      cin = cout
    self.blocks = nnx.List(blocks)
    self.bn2_scale = layers.Frozen(jnp.asarray(params["bn2/scale"], jnp.float32))
    self.bn2_shift = layers.Frozen(jnp.asarray(params["bn2/shift"], jnp.float32))
    self.fc_weight = layers.Frozen(jnp.asarray(params["fc/weight"], jnp.float32))
    self.fc_bias = layers.Frozen(jnp.asarray(params["fc/bias"], jnp.float32))
    self.features_scale = layers.Frozen(jnp.asarray(params["features/scale"], jnp.float32))
    self.features_shift = layers.Frozen(jnp.asarray(params["features/shift"], jnp.float32))
    self.dtype = dtype

  def __call__(self, crops: jax.Array) -> jax.Array:
    n = self.spec.input_size
    if crops.ndim != 4 or crops.shape[1:] != (n, n, 3):
      raise ValueError(f"IResNet: expected crops [B, {n}, {n}, 3], got {tuple(crops.shape)}")
    x = (crops.astype(jnp.float32) - self.input_mean[...]) * self.input_scale[...]
    x = x.astype(self.dtype)
    x = layers.prelu(self.stem(x), self.stem_prelu[...])
    for block in self.blocks:
      x = block(x)
    x = layers.channel_affine(x.astype(jnp.float32), self.bn2_scale[...], self.bn2_shift[...])
    x = x.reshape(x.shape[0], -1) @ self.fc_weight[...] + self.fc_bias[...]
    return layers.channel_affine(x, self.features_scale[...], self.features_shift[...])


def random_iresnet_params(spec: IResNetSpec, seed: int = 0) -> dict[str, np.ndarray]:
  """He-initialised weights and near-identity batch norms for `spec` (benchmarks and tests: the
  speed of a network does not depend on its weights)."""
  rng = np.random.default_rng(seed)
  params = {}
  for key, shape in spec.param_shapes().items():
    if key.endswith("/weight"):
      fan_in = int(np.prod(shape[:-1]))
      params[key] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
    elif key.endswith(("/scale", "/prelu")) and not key.startswith("input"):
      params[key] = rng.uniform(0.5, 1.0, shape).astype(np.float32) * (
          0.25 if key.endswith("prelu") else 1.0)
    else:
      params[key] = rng.normal(0.0, 0.05, shape).astype(np.float32)
  params["input/mean"] = np.full(3, 127.5, np.float32)
  params["input/scale"] = np.full(3, 1 / 127.5, np.float32)
  return params
