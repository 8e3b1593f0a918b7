"""A checkpoint's landmark error on synthetic faces framed by the detector vs by their true landmarks.

    python benchmarks/bench_framing.py --checkpoint runs/quickstart [--checkpoint runs/other ...]
        [--faces 128] [--seed 7]

Held-out photo-like synthetic faces (natural scenes, hair, neck, shoulders; yaw up to 45 deg, pitch
and roll up to 15 deg; seed 7, disjoint from training and from the framing calibration's seed 0)
are rendered on a 256 px canvas at 0.75 of an aligned crop's size, so a detector sees context
around them as in a photo. Each checkpoint reconstructs every face twice with
`msma_jax.Reconstructor` (no fitting, as `msma-jax reconstruct --checkpoint`): once cropped by
dlib's detection and 68 points, as every photo is, and once cropped by the true landmarks. The
68 predicted landmarks are compared with the true ones: NME = mean point error / outer-ocular
distance (points 36-45). Only faces dlib finds are scored, in both rows, so the rows differ only
by framing. Goal (issue "Real photos"): detector / true <= 1.25.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data_pipelines import synthetic  # noqa: E402
from msma_jax import Reconstructor  # noqa: E402
from msma_jax import camera as cam  # noqa: E402
from msma_jax.inference.inputs import InputError  # noqa: E402

CANVAS, FACE_SCALE, BATCH = 256, 0.75, 16
OPTIONS = synthetic.SyntheticOptions(max_yaw_deg=45, max_pitch_deg=15, max_roll_deg=15,
                                     backgrounds="natural", head=True)


def nme(predicted: np.ndarray, truth: np.ndarray) -> float:
  """Mean 68-point distance / outer-ocular distance (points 36 and 45 of `truth`)."""
  return float(np.linalg.norm(predicted - truth, axis=1).mean()
               / np.linalg.norm(truth[36] - truth[45]))


def render_faces(face_model, faces: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """-> (uint8 RGB [n, 256, 256, 3] canvases, true landmarks [n, 68, 2] canvas pixels)."""
  camera = cam.Camera.for_face_model(face_model, CANVAS)
  rng = np.random.default_rng(seed)
  images, marks = [], []
  for _ in range(0, faces, BATCH):
    _, img, _, lm = synthetic.make_faces(face_model, rng, BATCH, camera, OPTIONS, scale=FACE_SCALE)
    images.append(np.round(img * 255).astype(np.uint8))
    marks.append(lm)
  return np.concatenate(images)[:faces], np.concatenate(marks)[:faces]


def score(rec: Reconstructor, name: str, images: np.ndarray, truth: np.ndarray) -> dict:
  """NME per framing for one checkpoint's reconstructor, over the faces its detector finds."""
  det, true = [], []
  for i in tqdm(range(len(images)), desc=name, unit="face"):
    try:
      found = rec.reconstruct(images[i], name=f"face{i}")
    except InputError:
      continue                      # no face found: a photo would get no crop either
    det.append(nme(found[0].landmarks, truth[i]))
    true.append(nme(rec.reconstruct(images[i], landmarks=truth[i])[0].landmarks, truth[i]))
  return {"found": len(det), "detector": float(np.mean(det)), "true": float(np.mean(true)),
          "detector_median": float(np.median(det)), "true_median": float(np.median(true))}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--checkpoint", action="append", required=True,
                  help="an msma-jax run directory (repeat to compare runs in one table)")
  ap.add_argument("--faces", type=int, default=128, help="faces rendered (default 128)")
  ap.add_argument("--seed", type=int, default=7)
  args = ap.parse_args(argv)
  if args.faces < 1:
    ap.error("--faces must be >= 1")
  recs = [Reconstructor(c, keep_photo=False) for c in args.checkpoint]
  sizes = {tuple(r.face_model.sizes) for r in recs}
  if len(sizes) != 1:
    ap.error("the checkpoints use different face models; compare one model at a time")
  images, truth = render_faces(recs[0].face_model, args.faces, args.seed)
  rows = [(c, score(r, pathlib.Path(c).name, images, truth)) for c, r in zip(args.checkpoint, recs)]
  print(f"\n{args.faces} photo-like synthetic faces (seed {args.seed}), {platform.machine()} CPU")
  print("| checkpoint | found by dlib | NME, detector framing | NME, true framing | ratio |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for c, r in rows:
    print(f"| {c} | {r['found']} / {args.faces} | {r['detector']:.4f} (median "
          f"{r['detector_median']:.4f}) | {r['true']:.4f} (median {r['true_median']:.4f}) | "
          f"{r['detector'] / r['true']:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
