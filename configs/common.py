"""Sections shared by the training configs (`default.py`, `quickstart.py`, ablations)."""
from __future__ import annotations

import ml_collections

from configs.data import get_data_config
from configs.model import get_model_config
from configs.loss import get_loss_config
from configs.render import get_render_config


def base_config(model_variant: str = "msma_r50") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                     # the run's seed: weight init, and added to data.seed (order, augment)
  c.face_model = "embedded"      # or a BFM_model_front.mat / converted .npz
  c.normals = "auto"             # vertex normals: auto (point_buf where the model has one) | area | point_buf
  c.image_size = 224
  c.model = get_model_config(model_variant)
  c.loss = get_loss_config()
  c.render = get_render_config()           # how the renderer runs per backend (configs/render.py)

  c.data = get_data_config()
  c.data.synthetic_if_missing = False

  c.eval = ml_collections.ConfigDict()
  c.eval.enabled = True
  c.eval.path = "data/msma_synthetic_eval"
  c.eval.split = "train"
  c.eval.batch_size = 32
  c.eval.synthetic_if_missing = True
  c.eval.synthetic = ml_collections.ConfigDict()
  c.eval.synthetic.num_examples = 256
  c.eval.synthetic.seed = 12345            # disjoint from the training seed
  c.eval.synthetic.max_yaw_deg = 60.0
  c.eval.synthetic.max_pitch_deg = 20.0
  c.eval.synthetic.max_roll_deg = 20.0

  # Where a new run's weights start (msma_jax/train/init.py); a resumed run ignores it.
  c.init = ml_collections.ConfigDict()
  c.init.source = ""                        # "" (random) | torchvision:X.pth | deep3d:X.pth | run:DIR
  c.init.which = "best"                     # run sources: best | latest step
  c.init.partial = False                    # True: load what matches and report the rest

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"                     # adam | adamw | sgd
  c.optim.momentum = 0.9                   # sgd only
  c.optim.learning_rate = 1e-4
  c.optim.weight_decay = 0.0
  c.optim.warmup_steps = 0
  c.optim.schedule = "step"                # x decay_factor every decay_every_epochs
  c.optim.decay_every_epochs = 10.0
  c.optim.decay_factor = 0.2
  c.optim.final_fraction = 0.0             # cosine only
  c.optim.grad_clip_norm = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 187_500              # 20 epochs of 300k images at batch 32
  c.train.log_every = 50
  c.train.eval_every = 5_000
  c.train.checkpoint_every = 5_000
  c.train.progress = True

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                         # all devices not used by fsdp
  c.mesh.fsdp = 1

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.max_to_keep = 3
  c.checkpoint.best_metric = "eval/landmark_nme"
  c.checkpoint.best_mode = "min"
  c.checkpoint.async_save = True

  c.wandb = ml_collections.ConfigDict()
  c.wandb.mode = "auto"                    # online | offline | disabled | auto
  c.wandb.project = "msma-jax"
  c.wandb.entity = ""
  c.wandb.name = ""
  c.wandb.tags = ()

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  c.distributed.cpu_collectives = "gloo"
  return c
