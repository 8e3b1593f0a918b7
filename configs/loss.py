"""The `loss` config section: loss weights (Deep3DFaceRecon's defaults) and switches.

`msma_jax.losses` holds the terms; their weights live only here. Training configs take
`config.loss = get_loss_config()`; test-time fitting takes the same section (`configs/fit.py`).
"""
import ml_collections

# How the predicted shape is compared with the truth in the 3D term (see `msma_jax.losses.shape_loss`).
SHAPE_ALIGN = ("none", "rigid")
# Switches that are True or False.
SWITCHES = ("landmark_contour",)
# Positive weights (and the epsilon of the photometric square root); all must be finite and >= 0.
WEIGHTS = ("photometric", "landmark", "coeff_reg", "id_reg", "exp_reg", "tex_reg", "gamma",
           "reflectance", "identity", "photometric_eps", "shape_3d")


def get_loss_config() -> ml_collections.ConfigDict:
  """Loss weights (Deep3DFaceRecon's defaults). The identity term is off until a network is set."""
  c = ml_collections.ConfigDict()
  c.photometric = 1.92
  c.landmark = 1.6e-3     # pixels² at 224 px; configs at other sizes scale it by (224 / size)²
  c.coeff_reg = 3e-4
  c.id_reg = 1.0          # weights inside coeff_reg
  c.exp_reg = 0.8
  c.tex_reg = 1.7e-2
  c.gamma = 10.0
  c.reflectance = 5.0
  c.identity = 0.2        # used only when identity_network != 'none'
  c.identity_network = "none"   # 'none' | 'dlib' | 'arcface_onnx:<path>'
  c.photometric_eps = 1e-6
  # 3D shape supervision, only for data with ground truth (synthetic faces carry their coefficients).
  # Off in the paper's weakly supervised setting; the CPU quickstart turns it on (configs/quickstart.py).
  c.shape_3d = 0.0
  # "none" (as decoded, in model space) or "rigid" (after the least-squares rotation + translation
  # onto the truth, as the vertex metric does: pose-like parts of the shape that the image cannot
  # tell from the head pose cost nothing).
  c.shape_3d_align = "none"
  # True: the landmark term's jaw points (iBUG 0-16) follow the silhouette of the posed face
  # (msma_jax.contour: dynamic contour correspondence) instead of fixed vertices. Off for training
  # so that existing runs keep their loss; test-time fitting has its own switch (configs/fit.py).
  c.landmark_contour = False
  return c


def get_config() -> ml_collections.ConfigDict:
  """ml_collections' config-file entry point (`--config=configs/loss.py`)."""
  return get_loss_config()
