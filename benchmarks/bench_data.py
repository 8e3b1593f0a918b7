"""Data-pipeline throughput: the Grain training pipeline and face detection + alignment.

    python benchmarks/bench_data.py [--records 512] [--batches 40] [--photos 24] [--cnn 3]

1. Builds a prepared ArrayRecord dataset (`msma_face_images`, 224 JPEG crops, PNG skin masks) from
   warped copies of scikit-image's astronaut photo with landmark files (no detection, so the build is
   quick), then times the training pipeline (ArrayRecord read + JPEG/PNG decode + shift/scale/rotate/
   flip + colour jitter + float conversion + batching of 32) with 0 and 2 Grain worker processes.
2. Times detection + 68 landmarks + alignment + skin mask from raw 640x480 JPEG photos (dlib HOG,
   upsample 1; optionally the CNN detector), one process, and `prepare-data` end to end with 2
   detection worker processes.

"CPU ms / image" adds the CPU time of the main process and its worker processes over the timed
window, a figure that the machine's other load does not change much (images/s does).

Prints a table (images/s). Needs scikit-image (the test extra).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _photos(folder: pathlib.Path, n: int, size=(480, 640), landmark_files=True, seed=0):
  """n warped astronaut photos (JPEG, size (H, W)), with `.pts` files when `landmark_files`."""
  from PIL import Image
  from skimage import data

  from data_pipelines.alignment import warp_affine
  from data_pipelines.detection import FaceDetector
  from data_pipelines.landmarks import write_pts
  folder.mkdir(parents=True, exist_ok=True)
  img = data.astronaut()
  det = FaceDetector()
  lm = det.landmarks(img, det.detect(img)[0].box)
  rng = np.random.default_rng(seed)
  h, w = size
  for i in range(n):
    angle = np.radians(rng.uniform(-15, 15))
    s = rng.uniform(0.9, 1.6)
    a = s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    b = np.array([w / 2, h / 2]) + rng.uniform(-60, 60, 2) - a @ np.array([220.0, 120.0])
    m = np.concatenate([a, b[:, None]], 1)
    p = folder / f"p{i:05d}.jpg"
    Image.fromarray(warp_affine(img, m, (h, w))).save(p, quality=92)
    if landmark_files:
      write_pts(p.with_suffix(".pts"), lm @ a.T + b)
  return sorted(folder.glob("*.jpg"))


def _cpu_seconds() -> float:
  """CPU time (user + system) of this process and its live child processes (the Grain workers)."""
  import multiprocessing
  total = time.process_time()
  tick = os.sysconf("SC_CLK_TCK")
  for child in multiprocessing.active_children():
    try:
      fields = pathlib.Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
      pass
  return total


def bench_pipeline(path, workers: int, batches: int, warmup: int = 8, *, batch_size: int = 32,
                   size: int = 224, augment: bool = True) -> tuple[float, float]:
  """Times `batches` batches of `batch_size` crops of `size`² (the records' size) after `warmup`;
  augment=False: decode and batch only (the augmentation's share is the difference).
  -> (images/s wall clock, CPU milliseconds per image over all processes)."""
  from configs.data import get_data_config
  from data_pipelines.pipeline import make_pipeline
  cfg = get_data_config()
  cfg.global_batch_size = batch_size
  cfg.augment.enabled = augment
  it = iter(make_pipeline(path, cfg, worker_count=workers))
  try:
    for _ in range(warmup):
      next(it)
    t, c = time.perf_counter(), _cpu_seconds()
    for _ in range(batches):
      b = next(it)
      assert b["image"].shape == (batch_size, size, size, 3)
    n = batches * batch_size
    return n / (time.perf_counter() - t), (_cpu_seconds() - c) / n * 1e3
  finally:
    if hasattr(it, "close"):
      it.close()


def bench_detection(photos, detector: str) -> tuple[float, float]:
  from data_pipelines.faces import FacePreprocessor
  pre = FacePreprocessor(detector, use_landmark_files=False)
  pre.process(photos[0])                      # load models, warm up
  t, c = time.perf_counter(), _cpu_seconds()
  n = 0
  for p in photos:
    n += len(pre.process(p))
  assert n == len(photos)
  return len(photos) / (time.perf_counter() - t), (_cpu_seconds() - c) / len(photos) * 1e3


def bench_prepare(folder, out, workers: int) -> tuple[float, float]:
  """End to end, including starting the worker processes (their CPU time is not counted)."""
  from data_pipelines.tfds_builders import MsmaFaceImages, build
  b = MsmaFaceImages(source_dir=folder, data_dir=out, num_workers=workers, progress=False,
                     use_landmark_files=False)
  t = time.perf_counter()
  build(b, overwrite=True)
  dt = time.perf_counter() - t
  assert b.summary.faces == b.summary.images
  return b.summary.images / dt, float("nan")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--records", type=int, default=512)
  ap.add_argument("--batches", type=int, default=40, help="timed batches of 32 per setting")
  ap.add_argument("--photos", type=int, default=24, help="raw photos for detection timing")
  ap.add_argument("--prepare-photos", type=int, default=80,
                  help="raw photos for the end-to-end prepare-data timing")
  ap.add_argument("--cnn", type=int, default=3, help="photos for the CNN detector (0 = skip)")
  args = ap.parse_args(argv)
  import logging
  logging.getLogger("absl").setLevel(logging.ERROR)
  from data_pipelines.tfds_builders import MsmaFaceImages, build

  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    _photos(tmp / "prep", args.records, size=(360, 360))
    b = MsmaFaceImages(source_dir=tmp / "prep", data_dir=tmp / "data", progress=False)
    path = build(b)
    size_mb = sum(f.stat().st_size for f in path.glob("*.array_record*")) / 2**20
    for w in (0, 2):
      rows.append((f"training pipeline, prepared ArrayRecord, {w} workers", "batch 32",
                   bench_pipeline(path, w, args.batches)))
    raw = _photos(tmp / "raw", args.photos, landmark_files=False, seed=1)
    rows.append(("detect + align + skin mask, HOG (1 process)", "640x480 JPEG",
                 bench_detection(raw, "hog")))
    if args.cnn:
      rows.append(("detect + align + skin mask, CNN (1 process)", "640x480 JPEG",
                   bench_detection(raw[: args.cnn + 1], "cnn")))
    _photos(tmp / "raw2", args.prepare_photos, landmark_files=False, seed=2)
    rows.append((f"prepare-data end to end, {args.prepare_photos} photos (HOG, 2 detection "
                 "workers incl. their start-up, writes ArrayRecord)", "640x480 JPEG",
                 bench_prepare(tmp / "raw2", tmp / "data2", 2)))

  load = os.getloadavg()
  print(f"# bench_data  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
  print(f"# prepared dataset: {args.records} records, {size_mb:.1f} MiB of ArrayRecord")
  print("| what | input | images/s | CPU ms / image |")
  print("| --- | --- | ---: | ---: |")
  for what, inp, (v, cpu) in rows:
    cpu_s = "–" if np.isnan(cpu) else f"{cpu:.2f}"
    print(f"| {what} | {inp} | {v:,.1f} | {cpu_s} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
