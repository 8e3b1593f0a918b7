"""MobileNetV2 backbone (torchvision layout), the fast variant, returning C2-C5.

Inverted residual blocks (1x1 expand -> 3x3 depthwise -> 1x1 linear projection, ReLU6) with
torchvision's settings (expansion t, channels c, repeats n, first stride s):
(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
(6, 320, 1, 1), then a 1x1 conv to 1280. Stage outputs (input `[B, H, W, 3]`):
C2 = after block 3 (stride 4, 24 ch), C3 = after block 6 (stride 8, 32 ch), C4 = after block 13
(stride 16, 96 ch), C5 = the final 1x1 conv (stride 32, 1280 ch). `features[i]` is torchvision's
`features.i`, so weights import by rename. About 1/13 of ResNet-50's FLOPs at 224 x 224.
"""
from __future__ import annotations

import jax
from flax import nnx

from msma_jax.models.layers import Policy

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))
# index into `features` after which each stage is taken
STAGE_INDEX = {"C2": 3, "C3": 6, "C4": 13, "C5": 18}


def make_divisible(v: float, divisor: int = 8) -> int:
  """Rounds channels to a multiple of `divisor`, never more than 10 % below `v` (torchvision)."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNAct(nnx.Module):
  """k x k conv (optionally depthwise) -> BN -> ReLU6."""

  def __init__(self, in_features: int, out_features: int, kernel: int, stride: int = 1,
               groups: int = 1, *, policy: Policy, rngs: nnx.Rngs):
    self.conv = policy.conv(in_features, out_features, kernel, stride=stride, groups=groups,
                            rngs=rngs)
    self.bn = policy.batch_norm(out_features, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu6(self.bn(self.conv(x)))


class InvertedResidual(nnx.Module):
  """Expand (1x1, if t > 1) -> depthwise 3x3 (stride) -> project 1x1 + BN; residual when shapes match."""

  def __init__(self, in_features: int, out_features: int, stride: int, expansion: int, *,
               policy: Policy, rngs: nnx.Rngs):
    hidden = int(round(in_features * expansion))
    self.expand = (ConvBNAct(in_features, hidden, 1, policy=policy, rngs=rngs)
                   if expansion != 1 else None)
    self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, policy=policy, rngs=rngs)
    self.project = policy.conv(hidden, out_features, 1, rngs=rngs)
    self.bn = policy.batch_norm(out_features, rngs=rngs)
    self.residual = stride == 1 and in_features == out_features

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x if self.expand is None else self.expand(x)
    y = self.bn(self.project(self.depthwise(y)))
    return x + y if self.residual else y


class MobileNetV2(nnx.Module):
  """Images `[B, H, W, 3]` -> {"C2": [B, H/4, W/4, 24], ..., "C5": [B, H/32, W/32, 1280]}."""

  def __init__(self, width_mult: float = 1.0, *, policy: Policy, rngs: nnx.Rngs):
    stem = make_divisible(32 * width_mult)
    last = make_divisible(1280 * max(1.0, width_mult))
    blocks: list[nnx.Module] = [ConvBNAct(3, stem, 3, 2, policy=policy, rngs=rngs)]
    channels = [stem]
    c_in = stem
    for t, c, n, s in SETTINGS:
      c_out = make_divisible(c * width_mult)
      for i in range(n):
        blocks.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t, policy=policy,
                                       rngs=rngs))
        c_in = c_out
        channels.append(c_out)
    blocks.append(ConvBNAct(c_in, last, 1, policy=policy, rngs=rngs))
    channels.append(last)
    self.features = nnx.List(blocks)
    self.arch = "mobilenet_v2"
    self.stage_channels = {s: channels[i] for s, i in STAGE_INDEX.items()}

  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    out = {}
    stage_at = {i: s for s, i in STAGE_INDEX.items()}
    for i, blk in enumerate(self.features):
      x = blk(x)
      if i in stage_at:
        out[stage_at[i]] = x
    return out
