"""AFLW2000-3D: 68-point landmark NME (2D and 3D) by yaw bin.

Dataset layout (as released): one folder with image pairs

    AFLW2000/image00002.jpg   450x450 photo
    AFLW2000/image00002.mat   pt3d_68 [3, 68] (x, y in image pixels, z depth), Pose_Para [1, 7] =
                              (pitch, yaw, roll in radians, tx, ty, tz, scale), and the fitted 3DMM
                              parameters (Shape_Para, Exp_Para, ...; not read)

Protocol: for each photo, a 224x224 crop is cut by the similarity (scale + shift) that maps the
bounding box of the ground-truth 2D landmarks onto the box of the mean face's projected landmarks in
the face model's default framing (the crop a detector-based aligner would give). The predictor sees
the crop and the ground-truth landmarks mapped into it (its alignment input; a method that fits
landmarks at test time must be reported as such). Its coefficients are posed and projected; the 68
predicted landmarks are mapped back to the photo. NME = mean point distance / sqrt(w·h) of the
ground-truth 2D landmark box (%), in 2D (x, y) and in 3D (x, y, z with each set's z centred on its
mean, depth being defined only up to an offset). Reported per |yaw| bin [0, 30], (30, 60], (60, 90]
(|yaw| > 90 counts in the last bin), their mean (the "balanced" NME of 3DDFA's tables) and over all.

Assumptions: pt3d_68 is in MATLAB's 1-based pixel coordinates (pixel centres on integers), so 0.5
is subtracted to reach the project's convention (centres at +0.5 from 0); its z grows toward the
viewer, like the face models' z. The predicted z is the posed model z times the camera's pixels per
unit at the face's distance (weak perspective), divided by the crop scale.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Optional

import numpy as np

from msma_jax.evaluation.metrics import bbox_size, landmark_nme, summarize
from msma_jax.evaluation.predictors import Predictor, predict_checked, resolve_predictor
from msma_jax.face_model import FaceModel

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
CROP_SIZE = 224
MATLAB_TO_PIXEL = -0.5


class AnnotationError(ValueError):
  """A missing or unreadable AFLW2000-3D .mat annotation."""


@dataclasses.dataclass
class Sample:
  name: str
  image: np.ndarray          # [H, W, 3] float32 RGB in [0, 1]
  landmarks: np.ndarray      # [68, 3] project pixel convention (x, y), z as in the file
  yaw_deg: float


def dataset_folder(root) -> pathlib.Path:
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: AFLW2000-3D folder not found")
  if not any(root.glob("*.jpg")) and (root / "AFLW2000").is_dir():
    return root / "AFLW2000"
  return root


def load_annotation(mat_path) -> tuple[np.ndarray, float]:
  """(landmarks [68, 3] in the project's pixel convention, yaw in degrees) from one .mat file."""
  import scipy.io
  mat_path = pathlib.Path(mat_path)
  if not mat_path.is_file():
    raise AnnotationError(f"{mat_path}: annotation file not found")
  try:
    mat = scipy.io.loadmat(str(mat_path))
  except Exception as e:                                  # scipy raises several types
    raise AnnotationError(f"{mat_path}: unreadable .mat ({type(e).__name__}: {e})") from e
  if "pt3d_68" not in mat or "Pose_Para" not in mat:
    missing = [k for k in ("pt3d_68", "Pose_Para") if k not in mat]
    raise AnnotationError(f"{mat_path}: missing keys {missing}")
  pts = np.asarray(mat["pt3d_68"], np.float64)
  pose = np.asarray(mat["Pose_Para"], np.float64).reshape(-1)
  if pts.shape != (3, 68) or len(pose) < 3 or not np.all(np.isfinite(pts)):
    raise AnnotationError(f"{mat_path}: pt3d_68 must be finite [3, 68] and Pose_Para [1, 7], got "
                          f"{pts.shape} and {pose.shape}")
  lm = pts.T.copy()
  lm[:, :2] += MATLAB_TO_PIXEL
  return lm, float(np.degrees(pose[1]))


def load_sample(jpg_path) -> Sample:
  import cv2
  jpg_path = pathlib.Path(jpg_path)
  landmarks, yaw = load_annotation(jpg_path.with_suffix(".mat"))
  bgr = cv2.imread(str(jpg_path), cv2.IMREAD_COLOR)
  if bgr is None:
    raise AnnotationError(f"{jpg_path}: unreadable image")
  image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
  return Sample(jpg_path.stem, image, landmarks, yaw)


def reference_box(face_model: FaceModel) -> tuple[np.ndarray, float]:
  """(centre [2], size) of the mean face's projected landmarks in the model's default 224 crop."""

  from msma_jax import camera as cam
  camera = cam.Camera.for_face_model(face_model, CROP_SIZE)
  lm = np.asarray(cam.project(face_model.landmarks_3d(face_model.mean_shape), camera), np.float64)
  return (lm.min(0) + lm.max(0)) / 2.0, float(bbox_size(lm))


def crop_transform(landmarks_2d, ref_centre, ref_size) -> tuple[float, np.ndarray]:
  """(scale k, shift [2]) with crop = k · image + shift (project pixel convention)."""
  lm = np.asarray(landmarks_2d, np.float64)
  centre = (lm.min(0) + lm.max(0)) / 2.0
  k = ref_size / float(bbox_size(lm))
  return k, ref_centre - k * centre


def cut_crop(image, k: float, shift) -> np.ndarray:
  """[224, 224, 3] crop = image resampled at (crop - shift) / k (bilinear, black outside)."""
  import cv2
  # OpenCV puts pixel centres on integers: u_cv = k · x_cv + k · 0.5 + shift - 0.5.
  m = np.array([[k, 0.0, k * 0.5 + shift[0] - 0.5], [0.0, k, k * 0.5 + shift[1] - 0.5]])
  return cv2.warpAffine(image, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def predicted_landmarks(face_model: FaceModel, coeffs) -> np.ndarray:
  """[B, 68, 3] crop pixels: projected x, y and z = posed model z · focal / distance."""

  from msma_jax import camera as cam
  camera = cam.Camera.for_face_model(face_model, CROP_SIZE)
  world = cam.rigid_transform(face_model.landmarks_3d(face_model.shape(coeffs)), coeffs.angle,
                              coeffs.trans)
  xy = np.asarray(cam.project(world, camera), np.float64)
  z = np.asarray(world[..., 2], np.float64) * camera.focal / camera.distance
  return np.concatenate([xy, z[..., None]], -1)


def yaw_bin(yaw_deg: float) -> str:
  a = abs(yaw_deg)
  for lo, hi in YAW_BINS:
    if a <= hi:
      return f"yaw {lo:g}-{hi:g}"
  return f"yaw {YAW_BINS[-1][0]:g}-{YAW_BINS[-1][1]:g}"


@dataclasses.dataclass
class AflwResult:
  name: str
  yaw_deg: float
  bin: str
  nme_2d_percent: float
  nme_3d_percent: float


def evaluate_aflw2000(root, predictor: Predictor, face_model: FaceModel, report, *,
                      batch_size: int = 8, limit: Optional[int] = None,
                      progress: bool = False) -> list[AflwResult]:
  """Runs `predictor` on every photo with an annotation; bad pairs are excluded (one line each)."""
  folder = dataset_folder(root)
  jpgs = sorted(folder.glob("*.jpg"))
  if not jpgs:
    raise FileNotFoundError(f"{folder}: no .jpg images (is this the AFLW2000-3D folder?)")
  if limit:
    jpgs = jpgs[:limit]
  ref_centre, ref_size = reference_box(face_model)
  results: list[AflwResult] = []
  batches = [jpgs[i:i + batch_size] for i in range(0, len(jpgs), batch_size)]
  if progress:
    from tqdm import tqdm
    batches = tqdm(batches, desc="AFLW2000-3D", unit="batch")
  for batch in batches:
    samples, crops, crop_lms, transforms = [], [], [], []
    for jpg in batch:
      try:
        s = load_sample(jpg)
      except AnnotationError as e:
        report.exclude("missing or bad annotation", str(e))
        continue
      if float(bbox_size(s.landmarks[:, :2])) <= 1.0:
        report.exclude("missing or bad annotation", f"{jpg}: degenerate landmark box")
        continue
      k, shift = crop_transform(s.landmarks[:, :2], ref_centre, ref_size)
      samples.append(s)
      crops.append(cut_crop(s.image, k, shift))
      crop_lms.append(k * s.landmarks[:, :2] + shift)
      transforms.append((k, shift))
    if not samples:
      continue
    coeffs = predict_checked(predictor, np.stack(crops).astype(np.float32),
                             np.stack(crop_lms).astype(np.float32), face_model)
    pred = predicted_landmarks(face_model, coeffs)
    for s, (k, shift), p in zip(samples, transforms, pred):
      xy = (p[:, :2] - shift) / k
      z = p[:, 2] / k
      pred3 = np.concatenate([xy, (z - z.mean())[:, None]], 1)
      gt3 = s.landmarks.copy()
      gt3[:, 2] -= gt3[:, 2].mean()
      norm = bbox_size(s.landmarks[:, :2])
      results.append(AflwResult(s.name, s.yaw_deg, yaw_bin(s.yaw_deg),
                                100.0 * float(landmark_nme(xy, s.landmarks[:, :2], norm)),
                                100.0 * float(landmark_nme(pred3, gt3, norm))))
  return results


def run_aflw2000(out_dir, root, *, predictor="mean", face_model: FaceModel | str = "embedded",
                 batch_size: int = 8, limit: Optional[int] = None, progress: bool = True, log=None,
                 log_fn=None) -> dict:
  """Evaluates and writes report.md, aflw2000.csv, aflw2000_images.csv and the NME curves."""
  from msma_jax.evaluation.plots import plot_cumulative_errors
  from msma_jax.evaluation.report import Report
  from msma_jax.face_model import load_face_model
  fm = load_face_model(face_model) if isinstance(face_model, str) else face_model
  pred = resolve_predictor(predictor, fm)
  report = Report(out_dir, "AFLW2000-3D landmark NME", protocol="aflw2000", log=log, log_fn=log_fn)
  t0 = time.perf_counter()
  results = evaluate_aflw2000(root, pred, fm, report, batch_size=batch_size, limit=limit,
                              progress=progress)
  report.require(len(results), "image (a .jpg with its .mat annotation)")
  report.settings.update({
      "dataset": str(root), "predictor": pred.name, "images evaluated": len(results),
      "normalisation": "sqrt(w·h) of the ground-truth 2D landmark box",
      "crop": "ground-truth landmark box mapped onto the mean face's box in a 224 crop",
      "time (s)": f"{time.perf_counter() - t0:.1f}",
  })
  rows, bin_means = [], {"nme_2d_percent": [], "nme_3d_percent": []}
  for lo, hi in YAW_BINS:
    name = f"yaw {lo:g}-{hi:g}"
    sel = [r for r in results if r.bin == name]
    row = {"bin": name, "images": len(sel)}
    for m in bin_means:
      row[m] = summarize([getattr(r, m) for r in sel])["mean"]
      if sel:
        bin_means[m].append(row[m])
    rows.append(row)
  rows.append({"bin": "balanced (mean of bins)", "images": len(results),
               **{m: float(np.mean(v)) if v else float("nan") for m, v in bin_means.items()}})
  rows.append({"bin": "all", "images": len(results),
               **{m: summarize([getattr(r, m) for r in results])["mean"] for m in bin_means}})
  for row in rows:
    if row["images"]:
      key = row["bin"].split(" (")[0].replace(" ", "_")
      report.add_metrics({f"{key}/{m}": row[m] for m in bin_means})
  report.add_table("aflw2000", rows, ["bin", "images", "nme_2d_percent", "nme_3d_percent"],
                   caption=f"{pred.name}: 68-point NME (% of bounding-box size)")
  report.add_table("aflw2000_images", [dataclasses.asdict(r) for r in results],
                   ["name", "yaw_deg", "bin", "nme_2d_percent", "nme_3d_percent"], markdown=False)
  if results:
    curve = plot_cumulative_errors({"2D": [r.nme_2d_percent for r in results],
                                    "3D": [r.nme_3d_percent for r in results]},
                                   report.out_dir / "aflw2000_ced.png", xlabel="NME (%)",
                                   title=f"AFLW2000-3D: {pred.name}")
    report.add_figure(curve, "cumulative distribution of the per-image NME")
  report.write()
  return {"report": str(report.out_dir / "report.md"), "rows": rows, "evaluated": len(results),
          "excluded": {k: len(v) for k, v in report.excluded.items()}}
