"""The MSMA encoder: images -> backbone stages -> (fusion) -> (attention) -> heads -> Coefficients.

    images [B, H, W, 3] float RGB in [0, 1]
      -> input normalisation (ImageNet mean/std, or none for Deep3DFaceRecon weights)
      -> backbone: {"C2": stride 4, ..., "C5": stride 32}
      -> fusion on: MultiScaleFusion -> [B, H_t, W_t, width] on the target stage's grid
         fusion off: C5 [B, H/32, W/32, c5]
      -> attention at "features": `num_blocks` residual LKA/MLKA blocks
      -> AttributeHeads -> Coefficients (float32; zeros, i.e. the mean face, when freshly built)

`build_model(config.model, face_model)` is the one factory. Batch-norm statistics: a new model is in
training mode (batch statistics, running averages updated); `model.eval()` switches every
BatchNorm to the running averages, `model.train()` back (NNX `set_attributes`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs.errors import ConfigError
from msma_jax.face_model import Coefficients, CoefficientSizes, FaceModel
from msma_jax.models.attention import AttentionBlock
from msma_jax.models.errors import ImageInputError
from msma_jax.models.fusion import MultiScaleFusion
from msma_jax.models.heads import AttributeHeads
from msma_jax.models.layers import DTYPES, Policy
from msma_jax.models.mobilenet import MobileNetV2
from msma_jax.models.resnet import ResNet
from msma_jax.models.spec import EncoderSpec, spec_from_config

# torchvision's ImageNet statistics (RGB, images in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIZE = 32   # one C5 pixel


def make_backbone(name: str, *, width: float = 1.0, policy: Policy,
                  rngs: nnx.Rngs) -> nnx.Module:
  """Backbone by name (ResNets with a channel multiplier `width`); the result maps images to
  {"C2".."C5"} and has `stage_channels`."""
  if name == "mobilenet_v2":
    return MobileNetV2(policy=policy, rngs=rngs)
  return ResNet(name, width=width, policy=policy, rngs=rngs)


def check_images(images: Any) -> None:
  """Raises ImageInputError unless `images` is a floating `[B, H, W, 3]` array with H, W >= 32."""
  shape, dtype = tuple(np.shape(images)), getattr(images, "dtype", None)
  if len(shape) != 4:
    raise ImageInputError(f"images: expected shape [B, H, W, 3] (4 axes), got {shape}")
  if shape[-1] != 3:
    hint = (" (looks like PyTorch's NCHW layout; transpose to [B, H, W, 3])"
            if shape[1] == 3 else "")
    raise ImageInputError(f"images: expected 3 channels (RGB) in the last axis, got {shape[-1]} "
                          f"in shape {shape}{hint}")
  if shape[1] < MIN_SIZE or shape[2] < MIN_SIZE:
    raise ImageInputError(f"images: height and width must be >= {MIN_SIZE} pixels (the backbone "
                          f"downsamples by 32), got {shape[1]} x {shape[2]} in shape {shape}")
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ImageInputError(f"images: expected floating-point RGB in [0, 1], got dtype {dtype} "
                          "(convert uint8 images with images / 255)")


class MSMAEncoder(nnx.Module):
  """Face crop `[B, H, W, 3]` (RGB in [0, 1], 224 x 224 in the paper) -> `Coefficients`.

  Built by `build_model`; `spec` holds every switch (see `msma_jax.models.spec`).
  """

  def __init__(self, spec: EncoderSpec, sizes: CoefficientSizes, *, rngs: nnx.Rngs):
    self.spec = spec
    self.sizes = CoefficientSizes(*sizes)
    policy = Policy(dtype=DTYPES[spec.dtype], param_dtype=DTYPES[spec.param_dtype],
                    shard_params=spec.sharding.params == "fsdp",
                    fsdp_axis=spec.sharding.fsdp_axis, bn_momentum=spec.bn_momentum,
                    conv_impl=spec.conv_impl)
    self.policy = policy
    att = spec.attention
    kernels = att.kernels or None
    self.backbone = make_backbone(spec.backbone, width=spec.backbone_width, policy=policy,
                                  rngs=rngs)
    channels = self.backbone.stage_channels
    if spec.fusion.enabled:
      f = spec.fusion
      self.fusion = MultiScaleFusion(channels, f.stages, f.width, f.target, f.mode, f.upsample,
                                     stage_attention=att.at("stages"), attention_kernels=kernels,
                                     policy=policy, rngs=rngs)
      width = f.width
    else:
      self.fusion = None
      width = channels["C5"]
    self.feature_width = width
    self.refine = nnx.List(
        [AttentionBlock(width, att.kind, kernels, scale_init=att.scale_init, policy=policy,
                        rngs=rngs) for _ in range(att.num_blocks)]
        if att.at("features") else [])
    self.heads = AttributeHeads(width, self.sizes, spec.heads.mode, spec.heads.hidden,
                                spec.heads.pool, attention=att.at("heads"),
                                attention_kernels=kernels, policy=policy, rngs=rngs)

  def normalize(self, images: jax.Array) -> jax.Array:
    """[0, 1] RGB -> the backbone's input distribution, in the compute dtype."""
    x = images.astype(jnp.float32)
    if self.spec.input_norm == "imagenet":
      x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    return x.astype(self.policy.dtype)

  def stages(self, images: jax.Array) -> dict[str, jax.Array]:
    """Backbone stage outputs {"C2": [B, H/4, W/4, c2], ..., "C5": [B, H/32, W/32, c5]}."""
    check_images(images)
    return self.backbone(self.normalize(images))

  def features(self, images: jax.Array) -> jax.Array:
    """The map the heads read: `[B, H_t, W_t, width]` (fused) or C5, after attention blocks."""
    feats = self.stages(images)
    y = self.fusion(feats) if self.fusion is not None else feats["C5"]
    for block in self.refine:
      y = block(y)
    return y

  def __call__(self, images: jax.Array) -> Coefficients:
    """images `[B, H, W, 3]` float RGB in [0, 1] -> Coefficients (each field `[B, size]`, float32)."""
    return self.heads(self.features(images))


def build_model(model_config: Any, face_model: FaceModel | CoefficientSizes, *,
                rngs: nnx.Rngs | None = None, seed: int = 0, mesh=None) -> MSMAEncoder:
  """The encoder for `config.model` predicting coefficients of `face_model` (or given sizes).

  model_config: `config.model` (ConfigDict or dict; see `configs/model.py` for the variants);
  rngs / seed: parameter initialisation (`nnx.Rngs(seed)` unless rngs is given);
  mesh: optional `jax.sharding.Mesh`; parameters are then placed by their annotations
  (`sharding.params`: replicated, or sharded along the `fsdp` axis).
  """
  spec = model_config if isinstance(model_config, EncoderSpec) else spec_from_config(model_config)
  if isinstance(face_model, FaceModel):
    sizes = face_model.sizes
  elif isinstance(face_model, tuple) and len(face_model) == 6:
    sizes = CoefficientSizes(*face_model)
  else:
    raise ConfigError(f"build_model: face_model must be a FaceModel or CoefficientSizes, got "
                           f"{type(face_model).__name__}")
  model = MSMAEncoder(spec, sizes, rngs=rngs if rngs is not None else nnx.Rngs(seed))
  if mesh is not None:
    from msma_jax.models.sharding import shard_model
    shard_model(model, mesh)
  return model
