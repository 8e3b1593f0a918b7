"""ResNet-18/34/50 backbones (torchvision layout, "v1.5": stride in the 3x3 conv) returning C2-C5.

Attribute names follow torchvision's state-dict keys (`conv1`, `bn1`, `layer1[0].conv2`,
`layer2[0].downsample.conv` ...) so that weight import is a mechanical rename
(`msma_jax.models.torch_weights`). Input: normalised images `[B, H, W, 3]`; output: a dict of the
four stage outputs at strides 4, 8, 16, 32 (`C2`: `[B, ceil(H/4), ceil(W/4), 64 * e]`, ...,
`C5`: `[B, ceil(H/32), ceil(W/32), 512 * e]`, with expansion e = 1 for 18/34 and 4 for 50); a width
multiplier (`config.model.backbone_width`) scales every stage's channels, e.g. 0.5 for a ResNet-18
of 32-64-128-256 channels, ~1/4 of the compute, for small CPU runs (torchvision weights need 1).
"""
from __future__ import annotations

import jax
from flax import nnx

from msma_jax.models.conv import max_pool
from msma_jax.models.layers import ConvBN, Policy

STAGES = ("C2", "C3", "C4", "C5")
STAGE_STRIDES = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}
# name -> (block type, blocks per stage)
RESNET_SPECS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)


def stage_widths(multiplier: float = 1.0) -> tuple[int, ...]:
  """Base channels of the four stages (64, 128, 256, 512) x multiplier, rounded to multiples of 8."""
  if not multiplier > 0:
    raise ValueError(f"ResNet width multiplier must be > 0, got {multiplier!r}")
  return tuple(max(8, round(w * multiplier / 8) * 8) for w in STAGE_WIDTHS)


class BasicBlock(nnx.Module):
  """Two 3x3 conv-BN layers and a residual (ResNet-18/34)."""
  expansion = 1

  def __init__(self, in_features: int, width: int, stride: int, *, policy: Policy,
               rngs: nnx.Rngs):
    self.conv1 = policy.conv(in_features, width, 3, stride=stride, rngs=rngs)
    self.bn1 = policy.batch_norm(width, rngs=rngs)
    self.conv2 = policy.conv(width, width, 3, rngs=rngs)
    self.bn2 = policy.batch_norm(width, rngs=rngs)
    self.downsample = (ConvBN(in_features, width, 1, stride=stride, relu=False, policy=policy,
                              rngs=rngs)
                       if stride != 1 or in_features != width else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return jax.nn.relu(y + shortcut)


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4, residual (ResNet-50)."""
  expansion = 4

  def __init__(self, in_features: int, width: int, stride: int, *, policy: Policy,
               rngs: nnx.Rngs):
    out = width * self.expansion
    self.conv1 = policy.conv(in_features, width, 1, rngs=rngs)
    self.bn1 = policy.batch_norm(width, rngs=rngs)
    self.conv2 = policy.conv(width, width, 3, stride=stride, rngs=rngs)
    self.bn2 = policy.batch_norm(width, rngs=rngs)
    self.conv3 = policy.conv(width, out, 1, rngs=rngs)
    self.bn3 = policy.batch_norm(out, rngs=rngs)
    self.downsample = (ConvBN(in_features, out, 1, stride=stride, relu=False, policy=policy,
                              rngs=rngs)
                       if stride != 1 or in_features != out else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return jax.nn.relu(y + shortcut)


class ResNet(nnx.Module):
  """ResNet feature extractor: images `[B, H, W, 3]` -> {"C2": ..., "C5": ...} (no classifier)."""

  def __init__(self, name: str, *, width: float = 1.0, policy: Policy, rngs: nnx.Rngs):
    """width: multiplier of every stage's channels (stem 64 · width, ...; 1 = torchvision's)."""
    if name not in RESNET_SPECS:
      raise ValueError(f"unknown ResNet '{name}' (known: {sorted(RESNET_SPECS)})")
    widths = stage_widths(width)
    block_type, depths = RESNET_SPECS[name]
    block = BasicBlock if block_type == "basic" else Bottleneck
    self.arch = name
    self.conv1 = policy.conv(3, widths[0], 7, stride=2, rngs=rngs)
    self.bn1 = policy.batch_norm(widths[0], rngs=rngs)
    in_features = widths[0]
    layers = []
    for i, (stage_width, depth) in enumerate(zip(widths, depths)):
      blocks = []
      for j in range(depth):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(block(in_features, stage_width, stride, policy=policy, rngs=rngs))
        in_features = stage_width * block.expansion
      layers.append(nnx.List(blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = layers
    self.stage_channels = {s: w * block.expansion for s, w in zip(STAGES, widths)}

  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    x = max_pool(x, 3, 2)
    out = {}
    for stage, layer in zip(STAGES, (self.layer1, self.layer2, self.layer3, self.layer4)):
      for blk in layer:
        x = blk(x)
      out[stage] = x
    return out
