"""Where a trained run's 3D error sits: expression vs identity components, on its held-out split.

    python benchmarks/shape_decomposition.py runs/quickstart [--which latest] [--components 8]

Predicts the held-out synthetic faces of a training run (its config's `eval.path`, which carries the
ground-truth coefficients; a relative path is read from the directory the command runs in, so run it
where the run was trained) and prints two tables:

  1. the run's vertex RMSE (mm, rigid alignment over the face region, the training evaluation's
     metric) next to the mean face's, and what it would be with parts of the prediction replaced by
     the truth: the expression, the whole identity, or its leading k components;
  2. per identity component and per expression: the correlation of prediction and truth and the
     slope of the prediction regressed on the truth (1 = learned in full, 0 = the mean predicted).

A part whose replacement moves the error a lot and whose slope is near 0 is what the encoder has
not learned yet.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout, not an install


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("run", type=pathlib.Path, help="training run directory (or checkpoint folder)")
  ap.add_argument("--which", default="latest", choices=("latest", "best"))
  ap.add_argument("--components", type=int, default=8, help="identity components in table 2")
  args = ap.parse_args()
  if args.components < 1:
    ap.error(f"--components must be >= 1, got {args.components}")

  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from flax import nnx

  from msma_jax.evaluation.metrics import vertex_rmse
  from msma_jax.face_model import Coefficients, load_face_model
  from msma_jax.train.checkpoint import CheckpointLoadError, load_model
  from msma_jax.train.data import eval_batches

  try:
    model, meta = load_model(args.run, which=args.which)
  except CheckpointLoadError as e:
    ap.error(str(e))
  config = meta["config"]
  eval_dir = pathlib.Path(config["eval"]["path"]).absolute()   # relative: to where it was trained
  if not eval_dir.is_dir():
    ap.error(f"{eval_dir}: the run's held-out split (config.eval.path) is not there; run this "
             "from the directory the run was trained in")
  fm = load_face_model(config["face_model"])
  batches = eval_batches(eval_dir, ml_collections.ConfigDict({"batch_size": 16}),
                         int(config["image_size"]))
  if "coeffs" not in batches[0]:
    ap.error(f"{eval_dir}: the held-out split has no ground-truth coefficients (not synthetic)")
  predict = nnx.jit(lambda m, x: m(x).to_flat())
  pred = np.concatenate([np.asarray(predict(model, jnp.asarray(b["image"]))) for b in batches])
  truth = np.concatenate([b["coeffs"] for b in batches])
  sl = fm.sizes.slices()
  mask = np.asarray(fm.face_mask)
  gt_shapes = np.asarray(fm.shape(Coefficients.from_flat(jnp.asarray(truth), fm.sizes)))

  def rmse(flat: np.ndarray) -> float:
    shapes = np.asarray(fm.shape(Coefficients.from_flat(jnp.asarray(flat, jnp.float32), fm.sizes)))
    return float(np.mean([vertex_rmse(s, g, mask, align="rigid", unit_in_mm=fm.unit_in_mm)
                          for s, g in zip(shapes, gt_shapes)]))

  def with_truth(start: int, stop: int) -> np.ndarray:
    out = pred.copy()
    out[:, start:stop] = truth[:, start:stop]
    return out

  base = rmse(np.zeros_like(truth))
  rows = [("mean face", base), ("the run's prediction", rmse(pred)),
          ("prediction, true expression", rmse(with_truth(sl["exp"].start, sl["exp"].stop))),
          ("prediction, true identity", rmse(with_truth(sl["id"].start, sl["id"].stop)))]
  for k in (1, 2, 3, 5, 10):
    if k < fm.sizes.id:
      rows.append((f"prediction, true identity component{'s 1-' if k > 1 else ' '}{k}",
                   rmse(with_truth(sl["id"].start, sl["id"].start + k))))
  print(f"\n{args.run} ({args.which} checkpoint), {len(truth)} held-out faces of {eval_dir}")
  print("| prediction | vertex RMSE rigid (mm) | vs mean face |")
  print("| --- | ---: | ---: |")
  for name, value in rows:
    print(f"| {name} | {value:.3f} | {100 * (value / base - 1):+.1f} % |")

  def fit(p, t):
    r = float(np.corrcoef(p, t)[0, 1]) if np.std(p) > 0 and np.std(t) > 0 else 0.0
    return r, float(np.polyfit(t, p, 1)[0])

  print("\n| coefficient | correlation | slope (prediction on truth) |")
  print("| --- | ---: | ---: |")
  for j in range(min(args.components, fm.sizes.id)):
    r, slope = fit(pred[:, sl["id"].start + j], truth[:, sl["id"].start + j])
    print(f"| identity {j + 1} | {r:.2f} | {slope:.2f} |")
  names = fm.expression_names or tuple(f"expression {j + 1}" for j in range(fm.sizes.exp))
  for j, name in enumerate(names):
    r, slope = fit(pred[:, sl["exp"].start + j], truth[:, sl["exp"].start + j])
    print(f"| {name} | {r:.2f} | {slope:.2f} |")


if __name__ == "__main__":
  main()
