"""What the quickstart's 3D vertex metric can reward: errors of partly-true predictions.

    python benchmarks/shape_bounds.py [--faces 128] [--seed 1]

Samples synthetic faces as the quickstart does (|yaw| <= 45°, |pitch|, |roll| <= 15°) and prints the
vertex RMSE (mm, face region, rigid and similarity alignment as in the evaluator) of predictions
that take some coefficients from the truth and leave the rest at the mean: the mean face, the true
expression only, the true identity only, the true expression plus the first k identity components.
It also splits the leading identity components into their overall-scale part and the rest:
synthetic crops are framed by a 5-point alignment like photos, so a face's overall size is (up to
perspective) not in the image, yet rigid alignment counts it.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout, not an install

import jax.numpy as jnp
import numpy as np

from data_pipelines.synthetic import SyntheticOptions, sample_coefficients
from msma_jax.evaluation.metrics import vertex_rmse
from msma_jax.face_model import Coefficients, load_face_model


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--faces", type=int, default=128)
  ap.add_argument("--seed", type=int, default=1)
  args = ap.parse_args()
  fm = load_face_model("embedded")
  sizes, sl = fm.sizes, fm.sizes.slices()
  options = SyntheticOptions(max_yaw_deg=45, max_pitch_deg=15, max_roll_deg=15)
  truth = sample_coefficients(fm, np.random.default_rng(args.seed), args.faces, options)
  mask = np.asarray(fm.face_mask)

  def shapes(flat):
    return np.asarray(fm.shape(Coefficients.from_flat(jnp.asarray(flat), sizes)))

  gt = shapes(truth)

  def errors(flat):
    pred = shapes(flat)
    return [np.mean([vertex_rmse(p, g, mask, align=a, unit_in_mm=fm.unit_in_mm)
                     for p, g in zip(pred, gt)]) for a in ("rigid", "similarity")]

  def taking(*fields, id_components=None):
    flat = np.zeros_like(truth)
    for f in fields:
      flat[:, sl[f]] = truth[:, sl[f]]
    if id_components:
      ids = slice(sl["id"].start, sl["id"].start + id_components)
      flat[:, ids] = truth[:, ids]
    return flat

  rows = [("mean face", taking()), ("true expression", taking("exp")),
          ("true identity", taking("id"))]
  for k in (1, 2, 3, 5, 10):
    which = "component 1" if k == 1 else f"components 1-{k}"
    rows.append((f"true expression + identity {which}", taking("exp", id_components=k)))
  base = errors(rows[0][1])
  print(f"{args.faces} faces, |yaw| <= 45°, embedded model")
  print("| prediction | rigid (mm) | change | similarity (mm) | change |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for name, flat in rows:
    r, s = errors(flat)
    print(f"| {name} | {r:.2f} | {100 * (r / base[0] - 1):+.1f} % | {s:.2f} | {100 * (s / base[1] - 1):+.1f} % |")
  basis = np.asarray(fm.id_basis)[mask] * fm.unit_in_mm
  mean = np.asarray(fm.mean_shape)[mask] * fm.unit_in_mm
  centred = mean - mean.mean(0)
  print("\n| identity component | mm² per unit (mean over vertices) | of which overall scale |")
  print("| ---: | ---: | ---: |")
  for k in range(5):
    b = basis[..., k]
    scale = np.sum(b * centred) / np.sum(centred * centred)
    print(f"| {k + 1} | {np.mean(np.sum(b ** 2, 1)):.2f} | {np.mean(np.sum((scale * centred) ** 2, 1)):.2f} |")


if __name__ == "__main__":
  main()
