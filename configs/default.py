"""The paper-like configuration: MSMA ResNet-50 (fusion of C2-C5 + MLKA), 224², Deep3DFaceRecon's
loss weights and schedule (Adam 1e-4, x0.2 every 10 epochs, 20 epochs, batch 32).

    msma-jax train --config configs/default.py --workdir runs/msma_r50 \\
        --config.data.path=data/my_faces --config.face_model=BFM/BFM_model_front.mat

`--config configs/default.py:<variant>` picks another encoder variant (configs/model.py).
"""
from configs.common import base_config


def get_config(variant: str = "msma_r50"):
  c = base_config(variant or "msma_r50")
  c.data.path = "data/msma_face_images"    # `msma-jax prepare-data` output
  return c
