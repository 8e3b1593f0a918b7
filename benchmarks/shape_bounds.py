"""What the quickstart's 3D vertex metric can reward: errors of partly-true predictions.

    python benchmarks/shape_bounds.py [--faces 128] [--seed 1] [--fit-faces 2048]

Samples synthetic faces as the quickstart does (|yaw| <= 45°, |pitch|, |roll| <= 15°) and prints the
vertex RMSE (mm, face region, rigid and similarity alignment as in the evaluator) of predictions
that take some coefficients from the truth and leave the rest at the mean: the mean face, the true
expression only, the true identity only, the true expression plus the first k identity components.
It also splits the leading identity components into their overall-scale part and the rest, and
asks how much of the shape the 68 image landmarks determine: a ridge regression from the exact 2D
landmarks of framed faces (as the synthetic crops are framed) to identity + expression, fitted on
`--fit-faces` other faces, with and without pixel noise on the landmarks.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout, not an install

import jax.numpy as jnp
import numpy as np

from data_pipelines.synthetic import SyntheticOptions, frame_faces, project_landmarks, sample_coefficients
from msma_jax import camera as cam
from msma_jax.evaluation.metrics import landmark_nme, vertex_rmse
from msma_jax.face_model import Coefficients, load_face_model


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float):
  """Standardised features + bias, closed-form ridge; returns predict(x) -> y."""
  mu, sd = x.mean(0), x.std(0) + 1e-6
  a = np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1)
  w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)
  return lambda z: np.concatenate([(z - mu) / sd, np.ones((len(z), 1))], 1) @ w


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--faces", type=int, default=128)
  ap.add_argument("--seed", type=int, default=1)
  ap.add_argument("--fit-faces", type=int, default=2048, help="faces the landmark regression is fit on")
  ap.add_argument("--image-size", type=int, default=128)
  args = ap.parse_args()
  if args.faces < 1 or args.fit_faces < 16 or args.image_size < 32:
    ap.error(f"need --faces >= 1, --fit-faces >= 16 and --image-size >= 32 (got {args.faces}, "
             f"{args.fit_faces}, {args.image_size})")
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

  # How much of identity + expression the 68 landmarks of a framed crop determine.
  camera = cam.Camera.for_face_model(fm, args.image_size)
  rng = np.random.default_rng(args.seed + 1000)
  fit = frame_faces(fm, sample_coefficients(fm, rng, args.fit_faces, options), camera)
  test = frame_faces(fm, truth, camera)
  lm_fit = project_landmarks(fm, fit, camera).reshape(len(fit), -1)
  lm_test = project_landmarks(fm, test, camera)
  shape_fields = np.r_[np.arange(sizes.total)[sl["id"]], np.arange(sizes.total)[sl["exp"]]]
  hold = max(args.fit_faces // 8, 1)        # the ridge weight is chosen on these, not on the test faces
  print(f"\n| linear map from the 68 landmarks ({args.image_size} px crops) to identity + expression "
        "| landmark NME | rigid (mm) | change |")
  print("| --- | ---: | ---: | ---: |")
  for sigma in (0.0, 1.0, 2.0, 3.0):
    noisy_fit = lm_fit + rng.normal(0, sigma, lm_fit.shape)
    noisy_test = lm_test + rng.normal(0, sigma, lm_test.shape)
    best = None
    for lam in (1e-2, 1.0, 10.0, 100.0, 1000.0):
      predict = ridge_fit(noisy_fit[:-hold], fit[:-hold, shape_fields], lam)
      val = np.mean((predict(noisy_fit[-hold:]) - fit[-hold:, shape_fields]) ** 2)
      best = min(best or (np.inf, lam), (val, lam))
    predict = ridge_fit(noisy_fit, fit[:, shape_fields], best[1])
    flat = np.zeros_like(truth)
    flat[:, shape_fields] = predict(noisy_test.reshape(len(test), -1))
    nme = float(np.mean(landmark_nme(noisy_test, lm_test)))
    r, _ = errors(flat)
    label = "exact landmarks" if sigma == 0 else f"landmarks + N(0, {sigma:g} px) noise"
    print(f"| {label} (fit on {args.fit_faces} faces) | {nme:.4f} | {r:.2f} | {100 * (r / base[0] - 1):+.1f} % |")


if __name__ == "__main__":
  main()
