#!/usr/bin/env python
"""Evaluation speed on this machine: the synthetic benchmark and one MICC-style scan alignment.

    python benchmarks/bench_eval.py                  # prints a Markdown table
    python benchmarks/bench_eval.py --per-cell 4     # a smaller synthetic set

Timed (wall clock, seconds):

* building the synthetic set (`build_synthetic_set`: sampling + rendering at 224x224 with the JAX
  rasterizer), first call (with jit compilation) and a second call;
* evaluating the mean-face predictor on it (prediction, alignments, NME), and the whole
  `msma-jax evaluate synthetic` run (`run_synthetic`, report with curves and heat map) in-process
  after the warm-up;
* one MICC subject: ICP with scale (point-to-plane) of the embedded mesh onto a 40k-point scan crop
  and the point-to-plane distances, best of --repeats.
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout, not an install

import jax  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from msma_jax.evaluation.alignment import Similarity, fit_similarity, icp  # noqa: E402
from msma_jax.evaluation.metrics import point_to_plane_distances  # noqa: E402
from msma_jax.evaluation.predictors import MeanFacePredictor  # noqa: E402
from msma_jax.evaluation.synthetic import (build_synthetic_set, evaluate_synthetic,  # noqa: E402
                                           run_synthetic)
from msma_jax.face_model import load_face_model  # noqa: E402


def timed(fn):
  t = time.perf_counter()
  out = fn()
  return time.perf_counter() - t, out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--per-cell", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  fm = load_face_model("embedded")
  rows = []
  first, _ = timed(lambda: build_synthetic_set(fm, per_cell=args.per_cell))
  second, ds = timed(lambda: build_synthetic_set(fm, per_cell=args.per_cell))
  n = len(ds)
  rows.append((f"build synthetic set ({n} faces), first call incl. compilation", first, n / first))
  rows.append((f"build synthetic set ({n} faces), second call", second, n / second))
  ev, _ = timed(lambda: evaluate_synthetic(MeanFacePredictor(fm), fm, ds))
  rows.append((f"evaluate mean face ({n} faces)", ev, n / ev))
  with tempfile.TemporaryDirectory() as tmp:
    run_synthetic(tmp + "/warm", per_cell=1, progress=False, log=lambda m: None)   # warm the jits
    full, _ = timed(lambda: run_synthetic(tmp + "/full", per_cell=args.per_cell, oracle=True,
                                          progress=False, log=lambda m: None))
  rows.append((f"`run_synthetic(oracle=True)` after warm-up ({n} faces, mean face + oracle, "
               "report)", full, n / full))

  v = np.asarray(fm.mean_shape, np.float64)
  f = np.asarray(fm.triangles)
  lm = np.asarray(fm.landmark_indices)
  truth = Similarity(1.03, np.eye(3), np.array([4.0, -3.0, 20.0]))
  scan = trimesh.Trimesh(truth.apply(v), f, process=False)
  pts, _ = trimesh.sample.sample_surface(scan, 60000, seed=0)
  pts = pts[np.linalg.norm(pts - truth.apply(v[lm[30]]), axis=1) < 95.0][:40000]
  init = fit_similarity(v[lm], truth.apply(v[lm]) + np.random.default_rng(0).normal(size=(68, 3)))

  def subject():
    r = icp(v, pts, source_triangles=f, init=init)
    return point_to_plane_distances(pts, r.transform.apply(v), f)

  times = [timed(subject)[0] for _ in range(args.repeats)]
  rows.append((f"one MICC subject: ICP + point-to-plane, {len(pts)} scan points", min(times),
               1 / min(times)))

  load = os.getloadavg()
  print(f"Date: {datetime.datetime.now():%Y-%m-%d %H:%M}. Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, JAX {jax.__version__} {jax.default_backend()} backend. "
        f"Load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
  try:
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
  except OSError:
    pass
  print()
  print("| step | seconds | items/s |")
  print("| --- | ---: | ---: |")
  for name, sec, rate in rows:
    print(f"| {name} | {sec:.2f} | {rate:.1f} |")


if __name__ == "__main__":
  main()
