"""Landmark error on real photos against dlib's 68 points: checkpoints (no fitting) and the default
fitting-only `reconstruct`.

    python benchmarks/bench_photos.py [--photos DIR ...] [--checkpoint RUN ...] [--no-fit]
        [--face-model embedded|embedded-ict ...]

Photos: scikit-image's astronaut and matplotlib's Grace Hopper, plus every image in each `--photos`
folder (e.g. the example photos of Deep3DFaceRecon_pytorch `datasets/examples/` and dlib's
`examples/faces/`, fetched by hand; none are in this repository). Each photo's largest face dlib
finds (HOG, as `reconstruct` runs it) is reconstructed; its 68 predicted landmarks are compared
with dlib's own points (the only reference there is without hand annotations): NME = mean point
distance / outer-ocular distance (points 36-45). Rows: each `--checkpoint` with no fitting
(`msma-jax reconstruct --checkpoint RUN`), and `msma-jax reconstruct`'s default without a checkpoint
(landmark warm-up + 100 fitting steps), unless `--no-fit`; and the mean face placed by the
alignment alone (the baseline).
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

from data_pipelines.images import ImageReadError, read_image  # noqa: E402
from msma_jax import Reconstructor  # noqa: E402
from msma_jax.face_model import available_face_models  # noqa: E402
from msma_jax.inference.inputs import InputError  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def photos(folders: list[str]) -> list[tuple[str, np.ndarray]]:
  """(name, uint8 RGB) of the two packaged photos and every readable image in `folders`."""
  import matplotlib.cbook
  from skimage import data
  out = [("astronaut", data.astronaut())]
  with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
    import cv2
    out.append(("grace_hopper", cv2.imdecode(np.frombuffer(f.read(), np.uint8),
                                             cv2.IMREAD_COLOR)[..., ::-1].copy()))
  for folder in folders:
    for p in sorted(pathlib.Path(folder).iterdir()):
      if p.suffix.lower() in SUFFIXES and p.is_file():
        try:
          out.append((f"{pathlib.Path(folder).name}/{p.name}", read_image(p)))
        except ImageReadError:
          pass
  return out


JAW, INNER = slice(0, 17), slice(17, 68)


def nme(result) -> np.ndarray:
  """[3]: NME over all 68 points, the jaw contour (0-16) and the inner 51 (17-67)."""
  ref = np.asarray(result.input_landmarks, np.float64)
  d = np.linalg.norm(result.landmarks - ref, axis=1) / np.linalg.norm(ref[36] - ref[45])
  return np.array([d.mean(), d[JAW].mean(), d[INNER].mean()])


def score(rec: Reconstructor, label: str, pictures) -> dict:
  errs, missed = {}, 0
  for name, image in tqdm(pictures, desc=label, unit="photo"):
    try:
      faces = rec.reconstruct(image, name=name)
    except InputError:
      missed += 1
      continue
    errs[name] = nme(faces[0])
  return {"errors": errs, "missed": missed}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--photos", action="append", default=[], help="a folder of photos (repeatable)")
  ap.add_argument("--checkpoint", action="append", default=[], help="an msma-jax run (repeatable)")
  ap.add_argument("--no-fit", action="store_true", help="skip the fitting-only row")
  ap.add_argument("--face-model", action="append", default=[],
                  help="face model of the mean-face and fitting rows (repeatable; default embedded)")
  args = ap.parse_args(argv)
  for f in args.photos:
    if not pathlib.Path(f).is_dir():
      ap.error(f"--photos {f}: not a folder")
  for fm in args.face_model:
    if fm not in available_face_models() and not pathlib.Path(fm).is_file():
      ap.error(f"--face-model {fm}: neither {' nor '.join(available_face_models())} nor a file")
  pictures = photos(args.photos)
  rows = []
  for c in args.checkpoint:
    rows.append((f"--checkpoint {c}", score(Reconstructor(c, keep_photo=False), pathlib.Path(c).name,
                                            pictures)))
  # The baseline every model must beat: the mean face placed by the alignment alone. The crop is
  # framed by dlib's own points, so this row is what trusting the framing and ignoring the face gives.
  for fm in args.face_model or ["embedded"]:
    rows.append((f"mean face, {fm} (no checkpoint, no fitting)",
                 score(Reconstructor(face_model=fm, fit_steps=0, landmark_steps=0, keep_photo=False),
                       "mean face", pictures)))
    if not args.no_fit:
      rows.append((f"default, {fm} (no checkpoint: fitting)",
                   score(Reconstructor(face_model=fm, keep_photo=False), "fitting", pictures)))
  # score every row on the faces all rows found, so rows differ only by the method
  common = set.intersection(*(set(r["errors"]) for _, r in rows)) if rows else set()
  print(f"\n{len(pictures)} photos ({', '.join(['astronaut', 'grace_hopper'] + args.photos)}); "
        f"{len(common)} faces found by every row; {platform.machine()} CPU")
  print("| reconstruct | NME vs dlib (mean) | median | worst | jaw 0-16 | inner 17-67 "
        "| photos without a face |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
  for label, r in rows:
    e = np.array([r["errors"][k] for k in sorted(common)])
    print(f"| {label} | {e[:, 0].mean():.4f} | {np.median(e[:, 0]):.4f} | {e[:, 0].max():.4f} "
          f"| {e[:, 1].mean():.4f} | {e[:, 2].mean():.4f} | {r['missed']} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
