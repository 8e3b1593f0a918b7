"""Is reconstruct's fit at least as good as its detector? Landmark error to the truth on synthetic
photo-like faces, found and landmarked by the detector as a photo would be.

    python benchmarks/bench_fit_vs_detector.py [--faces 32] [--seed 0] [--rows default,...]

Faces: the embedded model's photo-like renders (natural scene, hair/neck, camera artefacts; yaw up
to 60 deg), 224 px pasted into a 384 px generated scene; the truth is the projection of the true
coefficients' 68 landmarks with the jaw on the silhouette (`msma_jax.contour`), i.e. where an
annotator puts them. Each face goes through `Reconstructor` (cascade detector, dlib's 68 points, the
fit); rows compare the detector's points and each fit setting's reported landmarks against the truth:
outer-ocular NME (mean point distance / distance of points 36 and 45), all 68 / jaw / inner, by yaw.
Only faces found by the detector count (the same faces in every row).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs.fit import get_reconstruct_fit_config  # noqa: E402
from data_pipelines import photo_like, synthetic  # noqa: E402
from msma_jax import Reconstructor  # noqa: E402
from msma_jax import camera as cam  # noqa: E402
from msma_jax.face_model import Coefficients, load_face_model  # noqa: E402
from msma_jax.inference.fit import projected_landmarks  # noqa: E402
from msma_jax.inference.inputs import InputError  # noqa: E402

PAD = 80
ROWS = {
    # label: (Reconstructor keyword arguments, fit config changes)
    "default": ({}, {}),
    "landmarks only (300 steps)": ({"fit_steps": 0}, {}),
    "200 full steps": ({"fit_steps": 200}, {}),
    "cosine schedule": ({}, {"schedule": "cosine"}),
}


def make_set(n: int, seed: int):
  """(images uint8 [n, 384, 384, 3], truth [n, 68, 2] scene px, yaw deg [n])."""
  fm = load_face_model("embedded")
  camera = cam.Camera.for_face_model(fm, 224)
  rng = np.random.default_rng(seed)
  opts = synthetic.SyntheticOptions(max_yaw_deg=60.0, backgrounds="natural", head=True,
                                    camera_artefacts=True)
  flat, faces, _, _ = synthetic.make_faces(fm, rng, n, camera, opts)
  coeffs = Coefficients.from_flat(jnp.asarray(flat), fm.sizes)
  truth = np.asarray(projected_landmarks(fm, coeffs, camera, contour=True)) + PAD
  scenes = photo_like.natural_backgrounds(rng, n, 224 + 2 * PAD)
  scenes[:, PAD:PAD + 224, PAD:PAD + 224] = faces
  yaw = np.degrees(flat[:, fm.sizes.slices()["angle"]][:, 1])
  return np.round(scenes * 255).astype(np.uint8), truth, yaw


def nme(points, truth):
  d = np.linalg.norm(points - truth, axis=-1) / np.linalg.norm(truth[36] - truth[45])
  return np.array([d.mean(), d[:17].mean(), d[17:].mean()])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  ap.add_argument("--faces", type=int, default=32)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
  args = ap.parse_args(argv)
  rows = args.rows.split(",")
  for r in rows:
    if r not in ROWS:
      ap.error(f"--rows: unknown row {r!r} (choose from {', '.join(ROWS)})")
  images, truth, yaw = make_set(args.faces, args.seed)
  results, detector, seconds = {}, {}, {}
  for label in rows:
    kwargs, changes = ROWS[label]
    config = get_reconstruct_fit_config()
    for k, v in changes.items():
      setattr(config, k, v)
    rec = Reconstructor(fit_config=config, keep_photo=False, select="largest", **kwargs)
    t0, found = time.perf_counter(), {}
    for i, img in enumerate(images):
      try:
        face = rec.reconstruct(img, name=f"face{i}")[0]
      except InputError:
        continue
      found[i] = face
    seconds[label] = time.perf_counter() - t0
    results[label] = {i: nme(f.landmarks, truth[i]) for i, f in found.items()}
    detector.update({i: nme(f.input_landmarks, truth[i]) for i, f in found.items()})
  common = sorted(set.intersection(*(set(r) for r in results.values())))
  bins = [(0, 20), (20, 40), (40, 61)]
  print(f"\n{args.faces} synthetic photo-like faces (seed {args.seed}), {len(common)} found by the "
        f"cascade; {platform.node()}, {os.cpu_count()} CPUs\n")
  head = ["landmarks", "NME all", "jaw 0-16", "inner 17-67",
          *[f"all, \\|yaw\\| {a}-{min(b, 60)}° (faces)" for a, b in bins], "s / face"]
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  ay = np.abs(yaw[common])

  def line(label, errs, secs):
    e = np.array([errs[i] for i in common])
    per_bin = [f"{e[(ay >= a) & (ay < b), 0].mean():.4f} ({((ay >= a) & (ay < b)).sum()})"
               for a, b in bins]
    print(f"| {label} | {e[:, 0].mean():.4f} | {e[:, 1].mean():.4f} | {e[:, 2].mean():.4f} | "
          + " | ".join(per_bin) + f" | {secs} |")
  line("detector (dlib 68 points)", detector, "-")
  for label in rows:
    line(f"reconstruct: {label}", results[label], f"{seconds[label] / max(len(results[label]), 1):.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
