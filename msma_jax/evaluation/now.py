"""NoW-style scan-to-mesh error (the NoW benchmark's non-metrical protocol, reimplemented).

Dataset layout (NoW as released; the images themselves are not read here):

    NOW_ROOT/imagepathsvalidation.txt             lines SUBJECT/CHALLENGE/IMAGE.jpg (or --image-list)
    NOW_ROOT/scans/SUBJECT/*.obj                  ground-truth scan (millimetres)
    NOW_ROOT/scans_lmks_onlypp/SUBJECT/*.pp       7 landmarks on the scan, MeshLab picked points
    NOW_ROOT/iphone_pictures/SUBJECT/CHALLENGE/IMAGE.jpg

Predictions (yours): PRED_ROOT/SUBJECT/CHALLENGE/IMAGE.obj|.ply with IMAGE.npy|.txt, the same 7
landmarks [7, 3] on the predicted mesh. When the landmark file is missing and the mesh has the face
model's topology, the model's landmark vertices are used (iBUG 36, 39, 42, 45, 33, 48, 54: the outer
and inner eye corners, the nose bottom and the mouth corners, NoW's order).

Per image: crop the scan to a sphere around the face centre (NoW's mask: centre = nose bottom +
0.3 x (inner-eye midpoint - nose bottom), radius = 1.4 x (outer-eye distance + nose length) / 2);
align the prediction to the scan by the similarity of the 7 landmarks (no reflection), refined by
ICP with isotropic scale against the cropped scan; distance from every cropped scan vertex to the
closest point of the aligned mesh surface. Reported: median, mean and std of all those distances
pooled, over all images and per challenge (multiview_neutral, multiview_expressions,
multiview_occlusions, selfie), in mm.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Optional

import numpy as np

from msma_jax.evaluation.alignment import fit_similarity, icp
from msma_jax.evaluation.meshes import (Mesh, MeshError, crop_sphere, load_landmarks_array,
                                        load_mesh, load_pp)
from msma_jax.evaluation.metrics import summarize
from msma_jax.evaluation.micc import has_model_topology, nanmean_rows
from msma_jax.evaluation.surface import MeshSearch
from msma_jax.face_model import FaceModel

NOW_LANDMARKS_IBUG = (36, 39, 42, 45, 33, 48, 54)
CHALLENGES = ("multiview_neutral", "multiview_expressions", "multiview_occlusions", "selfie")


def now_face_crop(landmarks7) -> tuple[np.ndarray, float]:
  """(centre [3], radius) of NoW's face mask from its 7 scan landmarks (outer eye, inner eye,
  inner eye, outer eye, nose bottom, mouth corner, mouth corner)."""
  lm = np.asarray(landmarks7, np.float64)
  nose_bottom = lm[4]
  bridge = (lm[1] + lm[2]) / 2.0
  centre = nose_bottom + 0.3 * (bridge - nose_bottom)
  radius = 1.4 * (np.linalg.norm(lm[0] - lm[3]) + np.linalg.norm(bridge - nose_bottom)) / 2.0
  return centre, float(radius)


@dataclasses.dataclass
class Scan:
  points: np.ndarray        # [N, 3] mm, cropped
  landmarks: np.ndarray     # [7, 3] mm
  centre: np.ndarray
  radius: float


def read_image_list(path) -> list[tuple[str, str, str]]:
  """(subject, challenge, image file name) per non-empty line of a NoW image list."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: NoW image list not found")
  out = []
  for n, line in enumerate(path.read_text().splitlines(), 1):
    line = line.strip()
    if not line:
      continue
    parts = line.replace("\\", "/").split("/")
    if len(parts) < 3:
      raise ValueError(f"{path}:{n}: expected SUBJECT/CHALLENGE/IMAGE, got {line!r}")
    # Only the last three parts are used, each a plain name: `..`, `.`, an empty part (`/etc/x`)
    # or a drive would lead the scan or prediction lookup out of its root folder.
    names = parts[-3:]
    if any(p in ("", ".", "..") or ":" in p for p in names):
      raise ValueError(f"{path}:{n}: {line!r} is not SUBJECT/CHALLENGE/IMAGE of plain names "
                       "(a path leaving the dataset root is not read)")
    out.append(tuple(names))
  return out


def load_scan(dataset_root: pathlib.Path, subject: str, scan_unit_mm: float = 1.0) -> Scan:
  scans = sorted((dataset_root / "scans" / subject).glob("*.obj"))
  if not scans:
    raise MeshError(f"{subject}: no ground-truth scan (expected {dataset_root}/scans/{subject}/*.obj)")
  pps = sorted((dataset_root / "scans_lmks_onlypp" / subject).glob("*.pp"))
  if not pps:
    raise MeshError(f"{subject}: no scan landmarks (expected {dataset_root}/scans_lmks_onlypp/"
                    f"{subject}/*.pp)")
  lm = load_pp(pps[0]) * scan_unit_mm
  if lm.shape != (7, 3):
    raise MeshError(f"{pps[0]}: expected the 7 NoW landmarks, got {lm.shape}")
  points = load_mesh(scans[0]).vertices * scan_unit_mm
  centre, radius = now_face_crop(lm)
  return Scan(points[crop_sphere(points, centre, radius)], lm, centre, radius)


def find_prediction(pred_root: pathlib.Path, subject: str, challenge: str, image: str):
  """(mesh path or None, landmark path or None)."""
  stem = pred_root / subject / challenge / pathlib.Path(image).stem
  mesh = next((stem.with_suffix(s) for s in (".obj", ".ply") if stem.with_suffix(s).is_file()), None)
  lms = next((stem.with_suffix(s) for s in (".npy", ".txt") if stem.with_suffix(s).is_file()), None)
  return mesh, lms


def scan_to_mesh(scan: Scan, mesh: Mesh, landmarks7: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(distances [N] mm from the cropped scan to the aligned mesh, aligned vertices [V, 3])."""
  init = fit_similarity(landmarks7, scan.landmarks)
  tris = mesh.triangles if len(mesh.triangles) else None
  result = icp(mesh.vertices, scan.points, source_triangles=tris, init=init, scale=True)
  aligned = result.transform.apply(mesh.vertices)
  if tris is None:
    return MeshSearch(aligned).nearest_vertices(scan.points)[0], aligned
  return MeshSearch(aligned, tris).closest(scan.points)[1], aligned


@dataclasses.dataclass
class NowResult:
  subject: str
  challenge: str
  image: str
  distances: np.ndarray
  vertex_errors_mm: Optional[np.ndarray] = None


def evaluate_now(dataset_root, pred_root, face_model: FaceModel, report, *, image_list=None,
                 challenge: Optional[str] = None, scan_unit_mm: float = 1.0,
                 progress: bool = False) -> list[NowResult]:
  """Runs the protocol for every listed image; bad inputs are excluded (one line each)."""
  dataset_root, pred_root = pathlib.Path(dataset_root), pathlib.Path(pred_root)
  for root, what in ((dataset_root, "NoW dataset"), (pred_root, "predictions")):
    if not root.is_dir():
      raise FileNotFoundError(f"{root}: {what} folder not found")
  if challenge is not None and challenge not in CHALLENGES:
    raise ValueError(f"NoW challenge {challenge!r} is not one of {', '.join(CHALLENGES)}")
  entries = read_image_list(image_list or dataset_root / "imagepathsvalidation.txt")
  if challenge:
    entries = [e for e in entries if e[1] == challenge]
  lm_idx = np.asarray(face_model.landmark_indices)[list(NOW_LANDMARKS_IBUG)]
  scans: dict[str, Scan | MeshError] = {}
  results = []
  items = entries
  if progress:
    from tqdm import tqdm
    items = tqdm(entries, desc="NoW images", unit="image")
  for subject, chal, image in items:
    where = f"{subject}/{chal}/{image}"
    if subject not in scans:
      try:
        scans[subject] = load_scan(dataset_root, subject, scan_unit_mm)
      except MeshError as e:
        scans[subject] = e
    scan = scans[subject]
    if isinstance(scan, MeshError):
      report.exclude("missing scan", f"{where}: {scan}")
      continue
    mesh_path, lm_path = find_prediction(pred_root, subject, chal, image)
    if mesh_path is None:
      report.exclude("no reconstruction", f"{where}: no predicted mesh (expected "
                     f"{pred_root / subject / chal / pathlib.Path(image).stem}.obj|ply)")
      continue
    try:
      mesh = load_mesh(mesh_path)
      topo = has_model_topology(mesh, face_model)
      if lm_path is not None:
        lm7 = load_landmarks_array(lm_path)
        if lm7.shape != (7, 3):
          raise MeshError(f"{lm_path}: expected the 7 NoW landmarks [7, 3], got {lm7.shape}")
      elif topo:
        lm7 = mesh.vertices[lm_idx]
      else:
        report.exclude("no landmarks", f"{where}: no predicted landmarks ({mesh_path.stem}.npy|txt) "
                       "and the mesh is not in the face model's topology")
        continue
    except MeshError as e:
      report.exclude("unreadable mesh", f"{where}: {e}")
      continue
    try:
      dist, aligned = scan_to_mesh(scan, mesh, lm7)
    except (ValueError, np.linalg.LinAlgError) as e:
      report.exclude("alignment failed", f"{where}: {e}")
      continue
    vertex = None
    if topo:
      d, _ = MeshSearch(scan.points).nearest_vertices(aligned)
      vertex = np.where(np.linalg.norm(aligned - scan.centre, axis=1) <= scan.radius, d, np.nan)
    results.append(NowResult(subject, chal, image, dist, vertex))
  return results


def run_now(out_dir, dataset_root, pred_root, *, face_model: FaceModel | str = "embedded",
            image_list=None, challenge: Optional[str] = None, scan_unit_mm: float = 1.0,
            progress: bool = True, log=None, log_fn=None) -> dict:
  """Evaluates and writes report.md, now.csv, now_images.csv, the curve (and a heat map)."""
  from msma_jax.evaluation.plots import plot_cumulative_errors, plot_vertex_heatmap
  from msma_jax.evaluation.report import Report
  from msma_jax.face_model import load_face_model
  fm = load_face_model(face_model) if isinstance(face_model, str) else face_model
  report = Report(out_dir, "NoW scan-to-mesh error", protocol="now", log=log, log_fn=log_fn)
  t0 = time.perf_counter()
  results = evaluate_now(dataset_root, pred_root, fm, report, image_list=image_list,
                         challenge=challenge, scan_unit_mm=scan_unit_mm, progress=progress)
  report.require(len(results), "image (a listed image with its scan and predicted mesh)")
  report.settings.update({
      "dataset": str(dataset_root), "predictions": str(pred_root),
      "image list": str(image_list or pathlib.Path(dataset_root) / "imagepathsvalidation.txt"),
      "crop": "NoW face mask from the 7 scan landmarks",
      "alignment": "7-landmark similarity, then ICP with isotropic scale (point-to-plane)",
      "distance": "scan vertex to the closest point of the predicted surface (mm)",
      "time (s)": f"{time.perf_counter() - t0:.1f}",
  })
  groups = [("all", results)] + [(c, [r for r in results if r.challenge == c]) for c in CHALLENGES]
  rows = []
  for name, rs in groups:
    st = summarize(np.concatenate([r.distances for r in rs]) if rs else [])
    rows.append({"challenge": name, "images": len(rs), "median_mm": st["median"],
                 "mean_mm": st["mean"], "std_mm": st["std"]})
    if rs:
      report.add_metrics({f"{name}/median_mm": st["median"], f"{name}/mean_mm": st["mean"],
                          f"{name}/std_mm": st["std"]})
  report.add_table("now", rows, ["challenge", "images", "median_mm", "mean_mm", "std_mm"],
                   caption="scan-to-mesh distance, all scan points pooled")
  per_image = [{"subject": r.subject, "challenge": r.challenge, "image": r.image,
                "points": len(r.distances), "median_mm": float(np.median(r.distances)),
                "mean_mm": float(np.mean(r.distances))} for r in results]
  report.add_table("now_images", per_image, ["subject", "challenge", "image", "points", "median_mm",
                                              "mean_mm"], markdown=False)
  if results:
    curve = plot_cumulative_errors({name: np.concatenate([r.distances for r in rs])
                                    for name, rs in groups if rs},
                                   report.out_dir / "now_ced.png", xlabel="scan-to-mesh error (mm)",
                                   title="NoW: cumulative error", xmax=8.0)
    report.add_figure(curve, "cumulative distribution of the scan-to-mesh distances")
    rows_v = [r.vertex_errors_mm for r in results if r.vertex_errors_mm is not None]
    if rows_v:
      path = plot_vertex_heatmap(fm, {"all images": nanmean_rows(rows_v)},
                                 report.out_dir / "now_vertex_error.png",
                                 title="NoW: mean distance to the scan per vertex")
      report.add_figure(path, "mean distance from each predicted vertex to the scan (mm)")
  report.write()
  return {"report": str(report.out_dir / "report.md"), "rows": rows, "evaluated": len(results),
          "excluded": {k: len(v) for k, v in report.excluded.items()}}
