"""Measures how dlib frames synthetic faces compared with their true landmarks; writes the fit.

    python scripts/calibrate_framing.py [--face-model embedded] [--faces 512] [--out FILE]

Renders photo-like synthetic faces (natural scenes, hair, neck, shoulders; yaw up to 45 deg) on a
256 px canvas with the face at 0.75 of an aligned crop's size (context around it, as in a photo),
runs the same detection as `reconstruct` and `prepare-data` (dlib HOG, upsample 1, 68 points), and
compares the 5-point alignment of dlib's points with that of the true ones
(`detector_framing.relative_framing`). Faces dlib misses are counted, not used: at test time they
get no crop. The fit (`FramingNoise.fit`: mean by yaw, covariance, outliers removed) is written into
`data_pipelines/framing_calibration.json` under the face model's name, with what it was measured on.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data_pipelines import synthetic  # noqa: E402
from data_pipelines.alignment import Aligner  # noqa: E402
from data_pipelines.detector_framing import (CALIBRATION_FILE, FramingNoise,  # noqa: E402
                                             relative_framing)
from data_pipelines.faces import FacePreprocessor, SkipImage  # noqa: E402
from msma_jax import camera as cam  # noqa: E402
from msma_jax.face_model import load_face_model  # noqa: E402

CANVAS, FACE_SCALE, BATCH = 256, 0.75, 16
OPTIONS = synthetic.SyntheticOptions(max_yaw_deg=45, max_pitch_deg=15, max_roll_deg=15,
                                     backgrounds="natural", head=True)


def measure(face_model, faces: int, seed: int):
  """-> (values [k, 3] relative framings, yaw [k] radians, found k, tried n, NME [k]) of the faces
  dlib found. NME: mean distance of dlib's 68 points to the true ones / outer-ocular distance."""
  camera = cam.Camera.for_face_model(face_model, CANVAS)
  aligner = Aligner(face_model, 224)
  pre = FacePreprocessor("hog", upsample=1, face_model=face_model)
  rng = np.random.default_rng(seed)
  values, yaws, nmes = [], [], []
  for _ in tqdm(range(0, faces, BATCH), desc="calibrating", unit="batch"):
    flat, images, _, landmarks = synthetic.make_faces(face_model, rng, BATCH, camera, OPTIONS,
                                                      scale=FACE_SCALE)
    yaw = flat[:, face_model.sizes.slices()["angle"]][:, 1]
    for img, lm, y in zip(images, landmarks, yaw):
      try:
        found = pre.find_landmarks(np.round(img * 255).astype(np.uint8), "render")[0][0][0]
      except SkipImage:
        continue
      values.append(relative_framing(aligner.fit(lm), aligner.fit(found)))
      yaws.append(y)
      nmes.append(np.linalg.norm(found - lm, axis=1).mean() / np.linalg.norm(lm[36] - lm[45]))
  n = len(range(0, faces, BATCH)) * BATCH
  return np.array(values), np.array(yaws), len(values), n, np.array(nmes)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--face-model", default="embedded", help="embedded | embedded-ict")
  ap.add_argument("--faces", type=int, default=512, help="faces rendered (default 512)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default=str(CALIBRATION_FILE), help="calibration file to update")
  args = ap.parse_args(argv)
  if args.faces < 64:
    ap.error("--faces must be at least 64")
  fm = load_face_model(args.face_model)
  values, yaw, found, tried, nme = measure(fm, args.faces, args.seed)
  noise = FramingNoise.fit(values, yaw)
  std = np.sqrt(np.diag(noise.cov))
  print(f"dlib found {found} of {tried} faces; NME of its 68 points vs the true ones: "
        f"median {np.median(nme):.3f}")
  print("| component | mean (frontal) | per sin(yaw) | per abs(sin(yaw)) | std |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for k, name in enumerate(("log scale", "shift x / S", "shift y / S")):
    w = noise.weights[:, k]
    print(f"| {name} | {w[0]:+.4f} | {w[1]:+.4f} | {w[2]:+.4f} | {std[k]:.4f} |")
  out = pathlib.Path(args.out)
  entries = json.loads(out.read_text()) if out.is_file() else {}
  entries[args.face_model] = {
      **noise.to_dict(), "faces_rendered": tried, "faces_found": found,
      "median_nme_dlib_vs_true": round(float(np.median(nme)), 4),
      "measured": f"python scripts/calibrate_framing.py --face-model {args.face_model} "
                  f"--faces {args.faces} --seed {args.seed}; {platform.machine()} CPU, "
                  f"{datetime.date.today().isoformat()}"}
  out.write_text(json.dumps(entries, indent=1) + "\n")
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
