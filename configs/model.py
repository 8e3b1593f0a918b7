"""The `model` config section: defaults and the named variants of the encoder's ablations.

Reuse from another config file::

    from configs.model import get_model_config
    config.model = get_model_config("msma_r50")          # or any name in VARIANTS

or on its own (ml_collections `config_flags` convention): `--config configs/model.py:msma_r50`.
`build_model(config.model, face_model)` (msma_jax.models) validates the section and builds it.

Switches (all in `config.model`):

    backbone            resnet18 | resnet34 | resnet50 | mobilenet_v2
    backbone_width      ResNet channel multiplier (1.0 = torchvision; 0.5 = half-width stages)
    input_norm          imagenet (torchvision ImageNet weights) | none (Deep3DFaceRecon weights)
    fusion.enabled      multi-scale fusion of backbone stages on/off (off: heads read C5)
    fusion.stages       which stages are fused, subset of ("C2", "C3", "C4", "C5")
    fusion.target       the stage whose grid the fused map lives on (C4: 14 x 14 at 224 x 224)
    fusion.width        channels of each 1x1 projection and of the fused map
    fusion.mode         concat (then 1x1 conv) | sum
    fusion.upsample     bilinear | nearest (coarser stages to the target grid)
    attention.kind      none | lka (VAN) | mlka (MAN, three kernel groups)
    attention.where     subset of ("features", "stages", "heads"): after fusion (or on C5 without
                        fusion), on each projected stage before fusing, one block per attribute head
    attention.kernels   ((k1, k2, dilation), ...); () = published defaults: LKA ((5, 7, 3),),
                        MLKA ((3, 5, 2), (5, 7, 3), (7, 9, 4))
    attention.num_blocks  attention blocks at "features"
    attention.scale_init  initial per-channel output scale (0: blocks start as the identity)
    heads.mode          per_attribute (id, exp, tex, angle, gamma, trans) | shared
    heads.hidden        hidden width of each head (0: linear heads, Deep3DFaceRecon's form)
    heads.pool          avg | max (global pooling)
    dtype               float32 | bfloat16 compute; param_dtype: float32 storage
    conv_impl           auto | xla | matmul (auto: matrix products on the CPU, XLA's convolutions
                        on GPU/TPU; same numbers, msma_jax.models.conv)
    sharding.params     replicated | fsdp (kernels sharded along mesh axis sharding.fsdp_axis)
    bn_momentum         running-statistics decay (0.9 = PyTorch momentum 0.1)

Variants (the ablation table; `BACKBONE_GRID` x fusion x attention is docs/MODELS.md's table):

    {bb}                 plain backbone, linear per-attribute heads on pooled C5
    {bb}_lka, {bb}_mlka  + attention on C5
    {bb}_fusion          + fusion of C2-C5 (concat, on the C4 grid, width 256)
    {bb}_fusion_lka      + fusion + LKA
    msma_{bb}            + fusion + MLKA: the MSMA encoder
  with bb in r18, r34, r50, mbv2 (MobileNetV2, the fast variant), and R50 ablations:
    msma_r50_sum              fusion by sum instead of concat
    msma_r50_c345             fuse C3-C5 only
    msma_r50_target_c5        fuse on the C5 grid (7 x 7)
    msma_r50_stage_attention  + MLKA on every projected stage before fusing
    msma_r50_head_attention   + an MLKA block per attribute head
    msma_r50_shared_heads     one shared head instead of one per attribute
    msma_r50_mlp_heads        per-attribute heads with a 256-wide hidden layer
    deep3d_r50                Deep3DFaceRecon's net_recon (r50 with input_norm none): loads its
                              checkpoint (msma_jax.models.torch_weights.load_deep3d_checkpoint)
"""
from __future__ import annotations

from typing import Callable

import ml_collections

from configs.errors import ConfigError

BACKBONES = {"r18": "resnet18", "r34": "resnet34", "r50": "resnet50", "mbv2": "mobilenet_v2"}
# Backbone x fusion x attention: (suffix or prefix pattern, fusion on, attention kind)
BACKBONE_GRID = (("{bb}", False, "none"), ("{bb}_lka", False, "lka"), ("{bb}_mlka", False, "mlka"),
                 ("{bb}_fusion", True, "none"), ("{bb}_fusion_lka", True, "lka"),
                 ("msma_{bb}", True, "mlka"))


def base_model_config() -> ml_collections.ConfigDict:
  """The MSMA ResNet-50 encoder (fusion of C2-C5 on the C4 grid, MLKA, per-attribute heads)."""
  c = ml_collections.ConfigDict()
  c.variant = "msma_r50"
  c.backbone = "resnet50"
  c.backbone_width = 1.0
  c.input_norm = "imagenet"

  c.fusion = ml_collections.ConfigDict()
  c.fusion.enabled = True
  c.fusion.stages = ("C2", "C3", "C4", "C5")
  c.fusion.target = "C4"
  c.fusion.width = 256
  c.fusion.mode = "concat"
  c.fusion.upsample = "bilinear"

  c.attention = ml_collections.ConfigDict()
  c.attention.kind = "mlka"
  c.attention.where = ("features",)
  c.attention.kernels = ()
  c.attention.num_blocks = 1
  c.attention.scale_init = 0.0

  c.heads = ml_collections.ConfigDict()
  c.heads.mode = "per_attribute"
  c.heads.hidden = 0
  c.heads.pool = "avg"

  c.dtype = "float32"
  c.param_dtype = "float32"
  c.conv_impl = "auto"
  c.sharding = ml_collections.ConfigDict()
  c.sharding.params = "replicated"
  c.sharding.fsdp_axis = "fsdp"
  c.bn_momentum = 0.9
  return c


def _grid_variant(bb: str, fusion: bool, kind: str) -> ml_collections.ConfigDict:
  c = base_model_config()
  c.backbone = BACKBONES[bb]
  c.fusion.enabled = fusion
  c.attention.kind = kind
  return c


def _r50_ablation(**changes) -> ml_collections.ConfigDict:
  c = base_model_config()
  for path, value in changes.items():
    section, _, field = path.rpartition("__")
    setattr(c[section] if section else c, field, value)
  return c


def _variants() -> dict[str, Callable[[], ml_collections.ConfigDict]]:
  out = {}
  for bb in BACKBONES:
    for pattern, fusion, kind in BACKBONE_GRID:
      out[pattern.format(bb=bb)] = (lambda bb=bb, fusion=fusion, kind=kind:
                                    _grid_variant(bb, fusion, kind))
  out.update({
      "msma_r50_sum": lambda: _r50_ablation(fusion__mode="sum"),
      "msma_r50_c345": lambda: _r50_ablation(fusion__stages=("C3", "C4", "C5")),
      "msma_r50_target_c5": lambda: _r50_ablation(fusion__target="C5"),
      "msma_r50_stage_attention": lambda: _r50_ablation(attention__where=("stages", "features")),
      "msma_r50_head_attention": lambda: _r50_ablation(attention__where=("features", "heads")),
      "msma_r50_shared_heads": lambda: _r50_ablation(heads__mode="shared"),
      "msma_r50_mlp_heads": lambda: _r50_ablation(heads__hidden=256),
      "deep3d_r50": lambda: _r50_ablation(input_norm="none", fusion__enabled=False,
                                          attention__kind="none"),
  })
  return out


VARIANTS = _variants()
# The ablations of the paper's kind, all on ResNet-50 (docs/MODELS.md lists every variant).
ABLATIONS = ("r50", "r50_lka", "r50_mlka", "r50_fusion", "r50_fusion_lka", "msma_r50",
             "msma_r50_sum", "msma_r50_c345", "msma_r50_target_c5", "msma_r50_stage_attention",
             "msma_r50_head_attention", "msma_r50_shared_heads", "msma_r50_mlp_heads")


def get_model_config(variant: str = "msma_r50") -> ml_collections.ConfigDict:
  """The `config.model` section of a named variant; raises ConfigError for an unknown name."""
  if variant not in VARIANTS:
    raise ConfigError(f"unknown model variant {variant!r} (known: {', '.join(sorted(VARIANTS))})")
  c = VARIANTS[variant]()
  c.variant = variant
  return c


def get_config(variant: str = "msma_r50") -> ml_collections.ConfigDict:
  """A config holding only the `model` section (`--config configs/model.py:VARIANT`)."""
  config = ml_collections.ConfigDict()
  config.model = get_model_config(variant or "msma_r50")
  return config
