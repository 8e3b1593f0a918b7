"""Video with identities (issue 18): frame-by-frame reconstruction vs tracked (one identity per
track, smoothed pose and expression) on a rendered video with known smooth motion.

    python benchmarks/bench_video.py [--frames 40] [--fit-size 112] [--landmarks noisy]
                                     [--noise-px 1.5] [--seed 0]

The video: one synthetic person (N(0, 1) identity x 0.8, random albedo, a head drawn behind the
face) in a 224x224 frame, turning smoothly (yaw +-20 deg, pitch +-5, roll +-3 over the clip),
drifting (x +-10 mm, y +-3 mm) and smiling (expression 0 from 0 to 0.4 and back). The landmarks
fitted to are the true ones (jaw on the silhouette) plus independent Gaussian noise of
`--noise-px` per coordinate and frame (`--landmarks noisy`: a detector's jitter, reproducible),
the true ones (`true`), or dlib's on the frames (`dlib`; frames where it finds no face are left out
of every row).

Both use the `Reconstructor` default without a checkpoint (mean face, 300 landmark + 100 full
fitting steps) at `--fit-size` (Reconstructor scales the landmark weight by (224 / fit size)^2 so
its balance with the photometric term is the one of 224 px):

  frame by frame   `Reconstructor.solve` on every frame independently (what `reconstruct` does)
  ... + smoothing  the same, pose / translation / expression smoothed (`video.smooth_track`)
  tracked          `video.fit_track` (identity + albedo fitted jointly on up to 8 frames, the other
                   frames with them fixed), then smoothed with sigma 0 (off), 1.5 (default), 3

Columns: landmark error = mean distance (px, frame pixels) of the reconstruction's 68 projected
landmarks to the true ones; jitter = RMS over frames and landmarks of the second temporal
difference of the projected landmarks (px; the true motion's own value is in the "truth" row);
pose error = mean |yaw, pitch, roll| error (deg) in the frame's camera; identity spread = RMS
distance (mm) of each frame's identity-only shape to their mean; mean shape error = mean vertex
distance (mm, `face_mask`, after rigid alignment) of that mean identity shape (what the MICC
protocol scores per video) to the true one; seconds = fitting (+ smoothing) wall time, after
compilation (each fitter is warmed up on the clip first; file writing is not included).
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_pipelines import photo_like  # noqa: E402
from msma_jax import camera as cam  # noqa: E402
from msma_jax.evaluation.metrics import aligned_vertex_errors  # noqa: E402
from msma_jax.face_model import Coefficients  # noqa: E402
from msma_jax.inference import video  # noqa: E402
from msma_jax.inference.fit import projected_landmarks  # noqa: E402
from msma_jax.inference.inputs import InputError  # noqa: E402
from msma_jax.inference.reconstruct import Reconstructor  # noqa: E402
from msma_jax.inference.tracking import DEFAULT_SMOOTH_SIGMA  # noqa: E402

FRAME = 224


def trajectory(fm, n: int, rng: np.random.Generator) -> Coefficients:
  """[n] coefficients of one person moving smoothly (module docstring)."""
  s = fm.sizes
  u = np.linspace(0.0, 1.0, n)
  angle = np.radians(np.stack([5.0 * np.sin(np.pi * u), 20.0 * np.sin(2 * np.pi * 0.8 * u - 0.8),
                               3.0 * np.sin(2 * np.pi * u)], -1))
  trans = np.stack([10.0 * np.sin(np.pi * (u - 0.5)), 3.0 * np.cos(np.pi * u), 0 * u], -1)
  exp = np.zeros((n, s.exp))
  exp[:, 0] = 0.2 * (1 - np.cos(2 * np.pi * u))
  gamma = np.zeros((n, 27))
  gamma[:, 0], gamma[:, 1:4] = 0.1, rng.normal(scale=0.1, size=3)
  tile = lambda v: np.tile(v.astype(np.float32), (n, 1))
  return Coefficients(id=tile(0.8 * rng.normal(size=s.id)), exp=exp.astype(np.float32),
                      tex=tile(0.8 * rng.normal(size=s.tex)), angle=angle.astype(np.float32),
                      gamma=gamma.astype(np.float32), trans=trans.astype(np.float32))


def render(rec, truth: Coefficients, rng):
  """Frames uint8 [n, 224, 224, 3] and true landmarks [n, 68, 2] (frame px)."""
  fm = rec.face_model
  camera = cam.Camera.for_face_model(fm, FRAME)
  landmarks = np.asarray(projected_landmarks(fm, truth, camera, contour=True), np.float64)
  frames = []
  for t in range(len(landmarks)):
    image, mask, _ = rec.views.render_crop(jax.tree.map(lambda a: a[t], truth), FRAME)
    back = photo_like.draw_head(np.full((FRAME, FRAME, 3), 0.45, np.float32), landmarks[t],
                                photo_like.skin_colour(image, mask), np.random.default_rng(0))
    frame = image * mask[..., None] + back * (1 - mask[..., None])
    frames.append(np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8))
  return np.stack(frames), landmarks


def picture_landmarks(rec, coeffs: Coefficients, faces) -> np.ndarray:
  """[n, 68, 2] frame pixels of the landmarks of crop-space coefficients [n]."""
  lm = np.asarray(projected_landmarks(rec.face_model, jax.tree.map(jnp.asarray, coeffs),
                                      rec.camera, contour=rec.fitter.contour))
  return np.stack([f.transform.to_image(p) for f, p in zip(faces, lm)])


def metrics(rec, coeffs, frame_coeffs, faces, truth, true_lm) -> dict:
  fm = rec.face_model
  lm = picture_landmarks(rec, coeffs, faces)
  mask = np.asarray(fm.face_mask)
  neutral = lambda c: jax.tree.map(jnp.asarray, c.replace(exp=np.zeros_like(c.exp)))
  shapes = np.asarray(fm.shape(neutral(coeffs)), np.float64)            # [n, V, 3] identity only
  mean_shape = shapes.mean(0)
  true_shape = np.asarray(fm.shape(neutral(truth)), np.float64)[0]
  pose = np.abs(video.pose_deg(frame_coeffs.angle) - video.pose_deg(truth.angle))
  mm = fm.unit_in_mm
  return {
      "lm": float(np.linalg.norm(lm - true_lm, axis=-1).mean()),
      "jitter": jitter(lm),
      "pose": float(pose.mean()),
      "spread": float(np.sqrt(np.mean(np.sum((shapes - mean_shape) ** 2, -1)[:, mask]))) * mm,
      "shape": float(aligned_vertex_errors(mean_shape, true_shape, mask)[mask].mean()) * mm}


def jitter(landmarks: np.ndarray) -> float:
  """RMS of the second temporal difference of [n, 68, 2] landmarks (px)."""
  d2 = np.diff(landmarks, n=2, axis=0)
  return float(np.sqrt(np.mean(np.sum(d2 ** 2, -1))))


def in_frame_camera(rec, coeffs: Coefficients, faces) -> Coefficients:
  """Crop-space coefficients [n] -> the frame's camera (sigma 0: no smoothing)."""
  steps = list(range(len(faces)))
  return video.smooth_track(rec.face_model, coeffs, [f.transform for f in faces], steps,
                            (FRAME, FRAME), 0.0)[1]


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--frames", type=int, default=40,
                  help="frames of the clip (default: %(default)s)")
  ap.add_argument("--fit-size", type=int, default=112,
                  help="crop size fitting renders at, px (default: %(default)s)")
  ap.add_argument("--fit-steps", type=int, default=None, metavar="N",
                  help="full fitting steps (default: reconstruct's, 100)")
  ap.add_argument("--landmarks", choices=["noisy", "true", "dlib"], default="noisy",
                  help="what is fitted to (default: %(default)s)")
  ap.add_argument("--noise-px", type=float, default=1.5,
                  help="--landmarks noisy: std per coordinate, px (default: %(default)s)")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  if args.frames < 8:
    ap.error("--frames must be >= 8")
  rng = np.random.default_rng(args.seed)
  rec = Reconstructor(fit_size=args.fit_size, fit_steps=args.fit_steps)   # scales the landmark weight
  fm = rec.face_model
  truth = trajectory(fm, args.frames, rng)
  t0 = time.perf_counter()
  frames, true_lm = render(rec, truth, rng)
  print(f"rendered {args.frames} frames in {time.perf_counter() - t0:.1f} s", flush=True)
  noisy = true_lm + rng.normal(scale=args.noise_px, size=true_lm.shape)
  faces, kept = [], []
  for t, frame in enumerate(frames):
    given = {"noisy": noisy[t][None], "true": true_lm[t][None], "dlib": None}[args.landmarks]
    try:
      faces.append(rec.prepare(frame, name=f"frame {t}", landmarks=given)[0])
      kept.append(t)
    except InputError as e:
      print(f"  frame {t}: {e}")
  if len(faces) < 8:
    print(f"only {len(faces)} frames with a face: nothing to compare", file=sys.stderr)
    return 1
  truth = jax.tree.map(lambda a: a[np.asarray(kept)], truth)
  true_lm = true_lm[kept]
  crops = np.stack([f.crop for f in faces])
  lms = np.stack([f.landmarks for f in faces])
  # warm-up: every batch shape of the timed runs compiles here, with 2 full steps (their count
  # is a Python loop; the landmark stage's is compiled in, so it stays)
  t0 = time.perf_counter()
  n, b = len(faces), rec.batch_size
  steps, rec.fit_steps = rec.fit_steps, min(rec.fit_steps, 2)
  try:
    rec.solve(crops[: b + n % b], lms[: b + n % b])
    video.fit_track(rec, faces[: 2 * b + n % b])
  finally:
    rec.fit_steps = steps
  print(f"compiled and warmed up in {time.perf_counter() - t0:.1f} s", flush=True)

  rows = []
  t0 = time.perf_counter()
  independent, _ = rec.solve(crops, lms)
  fit_s = time.perf_counter() - t0
  rows.append(("frame by frame", independent, fit_s))
  t0 = time.perf_counter()
  smoothed = video.smooth_track(fm, independent, [f.transform for f in faces],
                                list(range(len(faces))), (FRAME, FRAME), DEFAULT_SMOOTH_SIGMA)[0]
  rows.append((f"frame by frame + smoothing (sigma {DEFAULT_SMOOTH_SIGMA})", smoothed,
               fit_s + time.perf_counter() - t0))
  t0 = time.perf_counter()
  tracked, info = video.fit_track(rec, faces)
  fit_s = time.perf_counter() - t0
  for sigma in (0.0, DEFAULT_SMOOTH_SIGMA, 3.0):
    t0 = time.perf_counter()
    c = video.smooth_track(fm, tracked, [f.transform for f in faces], list(range(len(faces))),
                           (FRAME, FRAME), sigma)[0]
    label = "tracked, no smoothing" if sigma == 0 else f"tracked, sigma {sigma}" + (
        " (default)" if sigma == DEFAULT_SMOOTH_SIGMA else "")
    rows.append((label, c, fit_s + time.perf_counter() - t0))

  print()
  print(f"{len(faces)} frames {FRAME}x{FRAME}, landmarks {args.landmarks}"
        + (f" (sigma {args.noise_px} px)" if args.landmarks == "noisy" else "")
        + f", fit size {args.fit_size}, {rec.landmark_steps} landmark + {rec.fit_steps} full "
        f"steps, batch {rec.batch_size}; identity {info['identity']}; "
        f"{platform.machine()} {os.cpu_count()} cores, {datetime.date.today()}")
  print()
  print("| method | landmark error (px) | jitter (px) | pose error (deg) | identity spread (mm) "
        "| mean shape error (mm) | seconds |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
  print(f"| truth | 0 | {jitter(true_lm):.3f} | 0 | 0 | 0 | |")
  for label, c, seconds in rows:
    m = metrics(rec, c, in_frame_camera(rec, c, faces), faces, truth, true_lm)
    print(f"| {label} | {m['lm']:.2f} | {m['jitter']:.3f} | {m['pose']:.2f} | {m['spread']:.2f} "
          f"| {m['shape']:.2f} | {seconds:.1f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
