"""The test-time fitting section: `CoefficientFitter`'s defaults and `reconstruct`'s.

`get_fit_config()` is what `msma_jax.inference.fit` runs when given no config (tuned for 200 steps
from the mean face); `reconstruct` starts from it and takes `RECONSTRUCT` for its own defaults.
"""
import ml_collections

from configs.loss import get_loss_config

FIT_SCHEDULES = ("constant", "cosine")   # full-stage step size over the steps

# What `msma-jax reconstruct` / `Reconstructor` fit without a checkpoint (from the mean face): a
# landmark warm-up, then full steps at twice the library rate. Synthetic faces at 224 px come back
# within 0.6 px and 2.6 deg (tests/test_reconstruct.py).
RECONSTRUCT_FIT_STEPS = 100
RECONSTRUCT_LANDMARK_STEPS = 300
RECONSTRUCT_LEARNING_RATE = 0.1
RECONSTRUCT_SCHEDULE = "constant"
# Jaw landmarks that follow the silhouette (msma_jax.contour) in reconstruct's fit: chosen by
# benchmarks/bench_contour.py (docs/BENCHMARKS.md, "Contour landmarks (issue 18)").
RECONSTRUCT_CONTOUR_LANDMARKS = True


def get_fit_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # 200 x 0.05: landmarks within 0.5 px and pose within ~2 deg of the truth on synthetic faces
  # (tests/test_fit.py); pose and identity trade off slowly, so fewer steps leave pitch biased.
  c.steps = 200
  c.learning_rate = 0.05
  c.groups = ("id", "exp", "tex", "angle", "gamma", "trans")   # which coefficients move
  # Landmark-only warm-up before `steps` (0 = none); it moves only `landmark_groups`.
  c.landmark_steps = 0
  c.landmark_groups = ("id", "exp", "angle", "trans")
  # True: the jaw landmarks (iBUG 0-16) follow the silhouette of the posed face in both stages
  # (msma_jax.contour; overrides loss.landmark_contour); False: fixed vertices.
  c.contour_landmarks = False
  # Full-stage step size over the steps: "constant", or "cosine" (from learning_rate down to
  # 10 % of it, so the last steps settle instead of oscillating around the optimum).
  c.schedule = "constant"
  # Loss-increase guard: a face whose final total loss exceeds guard_ratio x its lowest total seen
  # (or is not finite) returns the coefficients of that lowest step instead of the last.
  c.guard_ratio = 2.0
  # The quality flag of a reconstructed face (its JSON): "good" when its landmarks lie within
  # quality_nme[0] (outer-ocular NME) of the points it was fitted to, "fair" within [1], else
  # "poor". 0.05 is about dlib's own error to hand annotations on in-the-wild photos.
  c.quality_nme = (0.05, 0.10)
  c.loss = get_loss_config()
  return c


def get_reconstruct_fit_config() -> ml_collections.ConfigDict:
  """`get_fit_config()` with reconstruct's learning rate and contour switch (its step counts
  depend on the mode)."""
  c = get_fit_config()
  c.learning_rate = RECONSTRUCT_LEARNING_RATE
  c.schedule = RECONSTRUCT_SCHEDULE
  c.contour_landmarks = RECONSTRUCT_CONTOUR_LANDMARKS
  return c
