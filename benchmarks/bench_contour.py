"""Fixed vs silhouette-following jaw landmarks in landmark-only fitting, per yaw bin.

    python benchmarks/bench_contour.py [--face-model embedded] [--per-bin 8] [--steps 300]

Synthetic faces (N(0, 1) identity, a random expression at up to 0.8, pitch and roll within 10 and
8 deg, |yaw| drawn uniformly in each bin, either side) whose 2D targets are what a 2D annotator
marks: the inner 51 points at their vertices, the 17 jaw points on the face's silhouette at its
pose (`msma_jax.contour` on the true shape). Each is fitted from the mean face by the landmark
stage of `CoefficientFitter` (reconstruct's learning rate; `--steps` steps; no rendering) with
fixed jaw vertices and with the contour correspondence. Reported per bin: NME (mean point error /
outer-ocular distance of the targets, iBUG 36-45) over the 17 jaw points and over all 68, both of
the fitted face's landmarks as each mode defines them, and the vertex error of the fitted shape
(mean distance over `face_mask` after rigid alignment, mm).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configs.fit import get_reconstruct_fit_config  # noqa: E402
from msma_jax import camera as cam  # noqa: E402
from msma_jax.evaluation.metrics import aligned_vertex_errors  # noqa: E402
from msma_jax.face_model import load_face_model  # noqa: E402
from msma_jax.inference.demo import random_coefficients  # noqa: E402
from msma_jax.inference.fit import CoefficientFitter, projected_landmarks  # noqa: E402

BINS = ((0, 15), (15, 30), (30, 45), (45, 60))


def synthetic_faces(fm, key, n, lo, hi):
  c = random_coefficients(fm, key, n, max_yaw_deg=0.0, max_pitch_deg=10.0, max_roll_deg=8.0)
  k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
  yaw = jax.random.uniform(k1, (n,), minval=lo, maxval=hi)
  sign = jnp.where(jax.random.bernoulli(k2, 0.5, (n,)), 1.0, -1.0)
  return c.replace(angle=c.angle.at[:, 1].set(jnp.radians(yaw * sign)))


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--face-model", default="embedded")
  ap.add_argument("--per-bin", type=int, default=8)
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  fm = load_face_model(args.face_model)
  camera = cam.Camera.for_face_model(fm, 224)
  mask = np.asarray(fm.face_mask)
  fitters = {}
  for mode in ("fixed", "contour"):
    config = get_reconstruct_fit_config()
    config.steps, config.landmark_steps = 0, args.steps
    config.contour_landmarks = mode == "contour"
    fitters[mode] = CoefficientFitter(fm, camera, config)
  lm_fn = {m: jax.jit(lambda c, m=m: projected_landmarks(fm, c, camera, contour=m == "contour"))
           for m in fitters}
  print(f"face model {args.face_model}, {args.per_bin} faces per bin, {args.steps} landmark steps")
  print(f"{'yaw bin':>9} | {'mode':>7} | {'NME jaw':>8} | {'NME 68':>7} | {'vertex mm':>9}")
  print("-" * 52)
  for b, (lo, hi) in enumerate(BINS):
    truth = synthetic_faces(fm, jax.random.key(args.seed * 100 + b), args.per_bin, lo, hi)
    target = lm_fn["contour"](truth)
    iod = np.linalg.norm(np.asarray(target[:, 36] - target[:, 45]), axis=-1)
    batch = {"landmarks": target}
    true_shape = np.asarray(fm.shape(truth))
    for mode, fitter in fitters.items():
      fitted, _ = fitter.fit(fm.zero_coefficients((args.per_bin,)), batch)
      err = np.linalg.norm(np.asarray(lm_fn[mode](fitted) - target), axis=-1) / iod[:, None]
      shape = np.asarray(fm.shape(fitted))
      verr = np.mean([aligned_vertex_errors(shape[i], true_shape[i], mask)[mask].mean()
                      for i in range(args.per_bin)]) * fm.unit_in_mm
      print(f"{f'{lo}-{hi}':>9} | {mode:>7} | {err[:, :17].mean():8.4f} | {err.mean():7.4f} | "
            f"{verr:9.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
