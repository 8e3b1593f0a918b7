"""The paper's ablations as configs: `--config configs/ablations.py:<variant>`.

Each is `default.py` with the encoder variant swapped (configs/model.py documents them):

    r50                 plain ResNet-50, linear heads on pooled C5
    r50_lka / r50_mlka  + large-kernel attention (VAN) / multi-scale LKA on C5
    r50_fusion          + multi-scale fusion of C2-C5, no attention
    r50_fusion_lka      + fusion + LKA
    msma_r50            + fusion + MLKA (the full model)
    msma_r50_sum | _c345 | _target_c5 | _stage_attention | _head_attention | _shared_heads |
    _mlp_heads          fusion/attention/head variants
    msma_r18 | msma_r34 backbone depth

The same grid runs as a sweep: configs/sweeps/ablations.yaml (`wandb sweep` or `msma-jax sweep`).
"""
from configs.default import get_config as default_config
from configs.model import VARIANTS


def get_config(variant: str = "msma_r50"):
  if variant not in VARIANTS:
    raise ValueError(f"configs/ablations.py: unknown variant {variant!r}; choose from "
                     f"{sorted(VARIANTS)}")
  c = default_config(variant)
  c.wandb.tags = ("ablation", variant)
  return c
