"""`config.model` -> a validated, immutable `EncoderSpec` (the switches `build_model` reads).

The defaults and the named ablation variants live in `configs/model.py`; this module only checks a
given section: every field known, every value one of the allowed ones, the combination consistent.
Each problem raises one `ConfigError` naming the field (`config.model.fusion.stages`) and the
allowed values.

Fields (all optional here; missing ones take the `EncoderSpec` defaults, the MSMA ResNet-50):

    backbone      resnet18 | resnet34 | resnet50 | mobilenet_v2
    backbone_width  ResNet channel multiplier (1.0: torchvision's widths; 0.5: half of each stage)
    input_norm    imagenet (torchvision weights) | none (Deep3DFaceRecon: RGB in [0, 1] as is)
    fusion        enabled, stages (subset of C2..C5), target (stage grid), width, mode
                  (concat | sum), upsample (bilinear | nearest)
    attention     kind (none | lka | mlka), where (subset of features, stages, heads),
                  kernels ((k1, k2, dilation) groups; () = the kind's published default),
                  num_blocks (blocks at "features"), scale_init (0: blocks start as identity)
    heads         mode (per_attribute | shared), hidden (0 = linear heads), pool (avg | max)
    dtype         float32 | bfloat16 (compute);  param_dtype float32 | bfloat16 (storage)
    conv_impl     auto | xla | matmul: how convolutions run (msma_jax.models.conv; auto = matmul
                  on the CPU backend, XLA's convolutions on GPU/TPU)
    sharding      params (replicated | fsdp), fsdp_axis (mesh axis name)
    bn_momentum   running-statistics decay (0.9 = PyTorch momentum 0.1)
    variant       name of the variant the section came from (informational)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from configs.errors import ConfigError

BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
INPUT_NORMS = ("imagenet", "none")
STAGES = ("C2", "C3", "C4", "C5")
ATTENTION_KINDS = ("none", "lka", "mlka")
ATTENTION_SITES = ("features", "stages", "heads")
FUSION_MODES = ("concat", "sum")
UPSAMPLE = ("bilinear", "nearest")
HEAD_MODES = ("per_attribute", "shared")
POOLS = ("avg", "max")
DTYPE_NAMES = ("float32", "bfloat16")
PARAM_SHARDING = ("replicated", "fsdp")
CONV_IMPLS = ("auto", "xla", "matmul")


@dataclasses.dataclass(frozen=True)
class FusionSpec:
  enabled: bool = True
  stages: tuple[str, ...] = STAGES
  target: str = "C4"
  width: int = 256
  mode: str = "concat"
  upsample: str = "bilinear"


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
  kind: str = "mlka"
  where: tuple[str, ...] = ("features",)
  kernels: tuple[tuple[int, int, int], ...] = ()
  num_blocks: int = 1
  scale_init: float = 0.0

  def at(self, site: str) -> str | None:
    """The attention kind used at `site`, or None."""
    return self.kind if self.kind != "none" and site in self.where else None


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  mode: str = "per_attribute"
  hidden: int = 0
  pool: str = "avg"


@dataclasses.dataclass(frozen=True)
class ShardingSpec:
  params: str = "replicated"
  fsdp_axis: str = "fsdp"


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  """Every switch of the encoder; `spec_from_config` builds it from `config.model`."""
  backbone: str = "resnet50"
  backbone_width: float = 1.0
  input_norm: str = "imagenet"
  fusion: FusionSpec = FusionSpec()
  attention: AttentionSpec = AttentionSpec()
  heads: HeadSpec = HeadSpec()
  dtype: str = "float32"
  param_dtype: str = "float32"
  conv_impl: str = "auto"
  sharding: ShardingSpec = ShardingSpec()
  bn_momentum: float = 0.9
  variant: str = "custom"


_SECTIONS = {"fusion": FusionSpec, "attention": AttentionSpec, "heads": HeadSpec,
             "sharding": ShardingSpec}


def _to_dict(cfg: Any) -> dict:
  if hasattr(cfg, "to_dict"):          # ml_collections.ConfigDict / FrozenConfigDict
    return cfg.to_dict()
  if isinstance(cfg, Mapping):
    return {k: (_to_dict(v) if isinstance(v, Mapping) or hasattr(v, "to_dict") else v)
            for k, v in cfg.items()}
  raise ConfigError(f"config.model: expected a ConfigDict or mapping, got {type(cfg).__name__}")


def _choice(value, allowed, field):
  if value not in allowed:
    raise ConfigError(f"config.model.{field}: unknown value {value!r} (allowed: "
                           f"{', '.join(map(str, allowed))})")
  return value


def _subset(values, allowed, field, *, nonempty=False):
  values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
  bad = [v for v in values if v not in allowed]
  if bad:
    raise ConfigError(f"config.model.{field}: unknown value(s) {bad} (allowed: "
                           f"{', '.join(allowed)})")
  if len(set(values)) != len(values):
    raise ConfigError(f"config.model.{field}: repeated entries in {list(values)}")
  if nonempty and not values:
    raise ConfigError(f"config.model.{field}: must name at least one of {', '.join(allowed)}")
  return values


def _positive_int(value, field, *, allow_zero=False):
  if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
    raise ConfigError(f"config.model.{field}: expected an integer >= {0 if allow_zero else 1}"
                           f", got {value!r}")
  return value


def spec_from_config(cfg: Any) -> EncoderSpec:
  """Validates `config.model` (ConfigDict or dict) and returns the `EncoderSpec`."""
  d = _to_dict(cfg)
  known = {f.name for f in dataclasses.fields(EncoderSpec)}
  extra = sorted(set(d) - known)
  if extra:
    raise ConfigError(f"config.model: unknown field(s) {extra} (known: {sorted(known)})")
  sections = {}
  for name, cls in _SECTIONS.items():
    sub = d.get(name, {})
    if not isinstance(sub, Mapping):
      raise ConfigError(f"config.model.{name}: expected a section (ConfigDict), got {sub!r}")
    sub_known = {f.name for f in dataclasses.fields(cls)}
    sub_extra = sorted(set(sub) - sub_known)
    if sub_extra:
      raise ConfigError(f"config.model.{name}: unknown field(s) {sub_extra} "
                             f"(known: {sorted(sub_known)})")
    sections[name] = dict(sub)

  f = sections["fusion"]
  fusion = FusionSpec(**f)
  fusion = dataclasses.replace(
      fusion, enabled=bool(fusion.enabled),
      stages=_subset(fusion.stages, STAGES, "fusion.stages", nonempty=fusion.enabled),
      target=_choice(fusion.target, STAGES, "fusion.target"),
      width=_positive_int(fusion.width, "fusion.width"),
      mode=_choice(fusion.mode, FUSION_MODES, "fusion.mode"),
      upsample=_choice(fusion.upsample, UPSAMPLE, "fusion.upsample"))

  a = AttentionSpec(**sections["attention"])
  kernels = tuple(tuple(k) for k in a.kernels)
  for k in kernels:
    if (len(k) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in k)
        or k[0] % 2 == 0 or k[1] % 2 == 0):
      raise ConfigError(f"config.model.attention.kernels: group {k} must be (odd k1, odd k2, "
                             "dilation >= 1)")
  attention = dataclasses.replace(
      a, kind=_choice(a.kind, ATTENTION_KINDS, "attention.kind"),
      where=_subset(a.where, ATTENTION_SITES, "attention.where"), kernels=kernels,
      num_blocks=_positive_int(a.num_blocks, "attention.num_blocks", allow_zero=True),
      scale_init=float(a.scale_init))
  if attention.kind == "lka" and len(kernels) > 1:
    raise ConfigError(f"config.model.attention.kernels: LKA takes one (k1, k2, dilation) "
                           f"group, got {len(kernels)}")
  if attention.at("stages") and not fusion.enabled:
    raise ConfigError("config.model.attention.where: 'stages' needs fusion.enabled = True "
                           "(stage attention runs on the fused stages)")

  h = HeadSpec(**sections["heads"])
  heads = dataclasses.replace(
      h, mode=_choice(h.mode, HEAD_MODES, "heads.mode"),
      hidden=_positive_int(h.hidden, "heads.hidden", allow_zero=True),
      pool=_choice(h.pool, POOLS, "heads.pool"))

  s = ShardingSpec(**sections["sharding"])
  sharding = dataclasses.replace(s, params=_choice(s.params, PARAM_SHARDING, "sharding.params"))
  if not isinstance(sharding.fsdp_axis, str) or not sharding.fsdp_axis:
    raise ConfigError(f"config.model.sharding.fsdp_axis: expected a mesh axis name, got "
                           f"{sharding.fsdp_axis!r}")

  top = {k: v for k, v in d.items() if k not in _SECTIONS}
  spec = EncoderSpec(**top, fusion=fusion, attention=attention, heads=heads, sharding=sharding)
  _choice(spec.backbone, BACKBONES, "backbone")
  _choice(spec.input_norm, INPUT_NORMS, "input_norm")
  _choice(spec.dtype, DTYPE_NAMES, "dtype")
  _choice(spec.param_dtype, DTYPE_NAMES, "param_dtype")
  _choice(spec.conv_impl, CONV_IMPLS, "conv_impl")
  bw = spec.backbone_width
  if isinstance(bw, bool) or not isinstance(bw, (int, float)) or not 0 < bw <= 4:
    raise ConfigError(f"config.model.backbone_width: expected a channel multiplier in (0, 4], "
                           f"got {bw!r}")
  if spec.backbone == "mobilenet_v2" and bw != 1:
    raise ConfigError("config.model.backbone_width: only the ResNets take a width multiplier "
                           f"(backbone {spec.backbone!r} needs 1.0, got {bw!r})")
  spec = dataclasses.replace(spec, backbone_width=float(bw))
  if not 0.0 <= float(spec.bn_momentum) < 1.0:
    raise ConfigError(f"config.model.bn_momentum: expected a decay in [0, 1), got "
                           f"{spec.bn_momentum!r}")
  return spec
