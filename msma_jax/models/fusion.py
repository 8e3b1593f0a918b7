"""Multi-scale fusion of backbone stages (MSMA): project, resample to one grid, fuse, refine.

    C_i [B, H_i, W_i, c_i] --1x1 conv+BN+ReLU--> [B, H_i, W_i, width]     (each selected stage)
        --optional attention per stage-->
        --resample to the target stage's grid [B, H_t, W_t, width]-->
    concat -> 1x1 conv+BN+ReLU (k*width -> width)   or   sum
        --optional attention refinement (done by the encoder, see encoder.py)-->

Resampling: a finer map whose size is an integer multiple of the target is average-pooled over
the f x f cells (exact area downsampling); a coarser map is upsampled bilinearly (half-pixel
centres, PyTorch's `align_corners=False`) or by nearest-neighbour repetition; other ratios (input
sizes not divisible by 32) fall back to `jax.image.resize` with antialiasing.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from msma_jax.models.attention import AttentionBlock
from msma_jax.models.layers import ConvBN, Policy

FUSION_MODES = ("concat", "sum")
UPSAMPLE_METHODS = ("bilinear", "nearest")


def resample(x: jax.Array, size: tuple[int, int], upsample: str = "bilinear") -> jax.Array:
  """Resamples NHWC `x` to spatial `size` (H, W); see the module docstring for the rules."""
  b, h, w, c = x.shape
  th, tw = size
  if (h, w) == (th, tw):
    return x
  if h % th == 0 and w % tw == 0:        # integer downsampling: mean over f x f cells
    fh, fw = h // th, w // tw
    return x.reshape(b, th, fh, tw, fw, c).mean(axis=(2, 4)).astype(x.dtype)
  if th % h == 0 and tw % w == 0 and upsample == "nearest":
    return jnp.repeat(jnp.repeat(x, th // h, axis=1), tw // w, axis=2)
  method = "nearest" if upsample == "nearest" else "linear"
  return jax.image.resize(x, (b, th, tw, c), method=method, antialias=True).astype(x.dtype)


class MultiScaleFusion(nnx.Module):
  """Fuses the selected backbone stages into one `[B, H_t, W_t, width]` map.

  stage_channels: channels of every backbone stage ({"C2": 256, ...}); stages: the ones fused;
  target: the stage whose grid the result lives on; mode: "concat" (then a 1x1 conv) or "sum";
  stage_attention: None or an attention kind ("lka" / "mlka") applied to each projected stage.
  """

  def __init__(self, stage_channels: dict[str, int], stages: Sequence[str], width: int,
               target: str, mode: str = "concat", upsample: str = "bilinear",
               stage_attention: str | None = None, attention_kernels=None, *, policy: Policy,
               rngs: nnx.Rngs):
    unknown = [s for s in (*stages, target) if s not in stage_channels]
    if unknown:
      raise ValueError(f"fusion: unknown stage(s) {unknown} (backbone has {list(stage_channels)})")
    if mode not in FUSION_MODES:
      raise ValueError(f"fusion: unknown mode '{mode}' (known: {FUSION_MODES})")
    if upsample not in UPSAMPLE_METHODS:
      raise ValueError(f"fusion: unknown upsample '{upsample}' (known: {UPSAMPLE_METHODS})")
    self.stages = tuple(stages)
    self.target = target
    self.mode = mode
    self.upsample = upsample
    self.width = width
    self.proj = nnx.Dict({s: ConvBN(stage_channels[s], width, 1, policy=policy, rngs=rngs)
                          for s in self.stages})
    self.stage_attention = (
        nnx.Dict({s: AttentionBlock(width, stage_attention, attention_kernels, policy=policy,
                                    rngs=rngs) for s in self.stages})
        if stage_attention else None)
    self.fuse = (ConvBN(len(self.stages) * width, width, 1, policy=policy, rngs=rngs)
                 if mode == "concat" else None)

  def __call__(self, features: dict[str, jax.Array]) -> jax.Array:
    size = features[self.target].shape[1:3]
    maps = []
    for s in self.stages:
      y = self.proj[s](features[s])
      if self.stage_attention is not None:
        y = self.stage_attention[s](y)
      maps.append(resample(y, size, self.upsample))
    if self.mode == "concat":
      return self.fuse(jnp.concatenate(maps, axis=-1))
    return sum(maps[1:], maps[0])
