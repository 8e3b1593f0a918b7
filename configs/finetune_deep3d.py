"""Fine-tuning from Deep3DFaceRecon's weights: MSMA's fusion and attention on its ResNet-50 (the paper).

Start from Deep3DFaceRecon_pytorch's released checkpoint (`epoch_20.pth`, whose `net_recon` entry is
the reconstruction network) and train the MSMA encoder -- that ResNet-50 backbone with the
multi-scale fusion of C2-C5 and MLKA attention added on top -- weakly supervised on photos prepared
by `msma-jax prepare-data`, with the Basel Face Model that net_recon was trained for:

    msma-jax prepare-data my_photos/ --out data/my_photos
    msma-jax train --config configs/finetune_deep3d.py --workdir runs/deep3d_msma \\
        --config.init.source=deep3d:checkpoints/face_recon/epoch_20.pth \\
        --config.face_model=BFM/BFM_model_front.mat --config.data.path=data/my_photos

What is loaded (`config.init`, msma_jax/train/init.py prints the table): net_recon's `backbone.*`
(ResNet-50: every convolution, converted OIHW -> HWIO, and every batch-norm scale, bias and running
statistic). What is not: net_recon's `final_layers` (1x1 convolutions on the pooled 2048-channel C5)
do not fit MSMA's heads, which read the 256-channel fused map; they are left out and the heads start
as every fresh model's do (zero: the mean face), reported as "reinitialised". Fusion and attention
are new as well ("not covered"; MLKA's output scale starts at 0, so the blocks start as the
identity).

`model.input_norm = "none"`: Deep3DFaceRecon feeds its network RGB in [0, 1] as is, so the imported
backbone must see that input (ImageNet normalisation would shift every activation its batch-norm
statistics were measured on; the importer refuses "imagenet" for a deep3d source).

Losses are the paper's weakly supervised ones with Deep3DFaceRecon's weights (configs/loss.py):
photometric on the skin mask, 68 landmarks, coefficient / lighting / reflectance regularisers, no
3D term (`loss.shape_3d = 0`). The identity (perceptual) term is off by default, since it needs a
face-recognition network; Deep3DFaceRecon uses an ArcFace one at weight 0.2:
`--config.loss.identity_network=arcface_onnx:w600k_r50.onnx` (or `dlib`).

Learning rate: the optimizer (msma_jax/train/optim.py) has one rate for every parameter -- no
per-group rates and no frozen backbone -- so the imported backbone cannot get a lower rate than
the new fusion, attention and heads. One small rate is used instead (half Deep3DFaceRecon's 1e-4,
with a warm-up so that the new layers' first, large gradients do not reach the backbone at full
rate), cosine-decayed.

`--config configs/finetune_deep3d.py:<variant>` takes another ResNet-50 variant of configs/model.py
(an r50 ablation such as `msma_r50_head_attention`; `deep3d_r50` fine-tunes net_recon as it is, its
final layers loaded onto the heads: the baseline without fusion and attention).

The held-out set is synthetic faces rendered with the same BFM (its own folder, so that it is never
mixed up with the embedded model's eval set of `configs/default.py`).
"""
from configs.common import base_config
from configs.errors import ConfigError


def get_config(variant: str = "msma_r50"):
  variant = variant or "msma_r50"
  c = base_config(variant)
  if c.model.backbone != "resnet50":
    raise ConfigError(f"configs/finetune_deep3d.py: variant {variant!r} has backbone "
                      f"{c.model.backbone}; Deep3DFaceRecon's net_recon is a ResNet-50 (msma_r50, "
                      "its r50 ablations, or deep3d_r50)")

  # Weights: Deep3DFaceRecon's net_recon (pass the real path on the command line).
  c.init.source = "deep3d:epoch_20.pth"
  c.init.partial = False                  # the backbone must match exactly

  # Face model: net_recon predicts BFM coefficients (id 80, exp 64, tex 80).
  c.face_model = "BFM/BFM_model_front.mat"
  c.image_size = 224                      # Deep3DFaceRecon's crop

  # Model: the variant's (msma_r50: fusion of C2-C5 on the C4 grid + MLKA), fed as net_recon was.
  c.model.backbone_width = 1.0            # net_recon's widths
  c.model.input_norm = "none"

  # Data: photos prepared by `msma-jax prepare-data`, Deep3DFaceRecon's augmentation.
  c.data.path = "data/msma_face_images"
  c.data.synthetic_if_missing = False
  c.data.global_batch_size = 32
  c.data.augment.enabled = True
  c.data.augment.flip_prob = 0.5          # no 3D term, so mirrored crops are fine

  # Eval: synthetic faces of the same BFM, in a folder of their own.
  c.eval.path = "data/msma_synthetic_eval_bfm"
  c.eval.synthetic_if_missing = True

  # Losses: weakly supervised (Deep3DFaceRecon's weights at 224 px), no 3D ground truth.
  c.loss.shape_3d = 0.0
  c.loss.identity_network = "none"        # see the docstring for the perceptual term
  # BFM_model_front.mat carries no contour bands: the jaw landmarks are fixed vertices, as in
  # Deep3DFaceRecon (the switch would change nothing for it).
  c.loss.landmark_contour = False

  # One small rate for everything (no per-group rates in config.optim; see the docstring).
  c.optim.name = "adam"
  c.optim.learning_rate = 5e-5
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 1_000
  c.optim.final_fraction = 0.05
  c.optim.grad_clip_norm = 0.0

  c.train.num_steps = 50_000              # ~5 epochs of 300k photos at batch 32
  c.train.log_every = 50
  c.train.eval_every = 2_500
  c.train.checkpoint_every = 2_500
  c.wandb.tags = ("finetune", "deep3d", variant)
  return c
