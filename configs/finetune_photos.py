"""Fine-tuning on photos: the paper's weakly supervised setting on a folder of real faces.

Start from a trained run (by default the quickstart's) and train on photos prepared by
`msma-jax prepare-data`, with what a photo offers: the photometric term on its skin mask, dlib's 68
landmarks, the coefficient regularisers (and the identity term when a network is configured) -- no
3D supervision (`loss.shape_3d = 0`). The augmentation is Deep3DFaceRecon's, flip included.

    msma-jax prepare-data my_photos/ --out data/my_photos
    msma-jax train --config configs/finetune_photos.py --workdir runs/photos \\
        --config.data.path=data/my_photos --config.init.source=run:runs/quickstart

The architecture must be the init run's: the variant after `:` (default msma_r18, the quickstart's)
and the quickstart's width and crop size are kept; crops prepared at another size (prepare-data's
224 px) are resized to `image_size` by the pipeline. The held-out synthetic set stays the eval set,
so the run shows whether fitting photos costs the 3D accuracy learnt from renders.
"""
from configs.quickstart import get_config as quickstart_config


def get_config(variant: str = "msma_r18"):
  c = quickstart_config(variant or "msma_r18")
  c.init.source = "run:runs/quickstart"
  c.init.which = "best"
  c.data.path = "data/photos"             # a `prepare-data` output folder
  c.data.synthetic_if_missing = False
  c.data.augment.enabled = True           # photos come framed by a detector: train for its noise
  c.data.augment.flip_prob = 0.5          # no 3D term, so mirrored crops are fine
  c.loss.shape_3d = 0.0                   # the paper's setting: photos have no 3D ground truth
  # dlib's jaw points follow the silhouette; so do reconstruct's (issue 18's contour correspondence)
  c.loss.landmark_contour = True
  # A gentle rate: the network is trained already, photos are few and only weakly labelled.
  c.optim.learning_rate = 3e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 20
  c.train.num_steps = 500
  c.train.log_every = 10
  c.train.eval_every = 250
  c.train.checkpoint_every = 250
  return c
