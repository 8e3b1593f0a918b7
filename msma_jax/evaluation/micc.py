"""MICC Florence protocol: per-video mean shapes against the ground-truth scans.

Dataset layout (the MICC Florence 2D/3D Hybrid Face Dataset as released; only the scans are read):

    MICC_ROOT/subject_01/Model/frontal1/obj/<timestamp>.obj    ground-truth scan (3dMD, millimetres)
    MICC_ROOT/subject_01/Model/frontal2/obj/<timestamp>.obj    second frontal scan of some subjects
    MICC_ROOT/subject_01/Video/{Indoor-Cooperative,PTZ-Indoor,PTZ-Outdoor}.mjpg   (not read here)

Reconstructions (yours; one folder per subject, named like the dataset's):

    RECON_ROOT/subject_01/Indoor-Cooperative/*.obj|*.ply   every reconstructed frame of that video,
                                                          one topology (averaged here), or
    RECON_ROOT/subject_01/Indoor-Cooperative.obj|.ply      one mesh per video, already averaged

Optional scan landmarks: 68 iBUG points as menpo LJSON (the layout GANFit's MICC_landmarks use),
`LANDMARKS_ROOT/subject_01/Model/frontal1/obj/*.ljson`, or an `.ljson` beside the scan.

Protocol (DESIGN.md; Deep3DFaceRecon's description): for each subject and setting, average the
video's shapes; crop the scan to `crop_radius_mm` (95) around the nose tip; align the mean shape to
the crop by ICP with isotropic scale (point-to-plane, `alignment.icp`), initialised from landmarks;
measure the point-to-plane distance of every cropped scan point (nearest reconstruction vertex, its
normal); RMSE per subject; mean ± std over subjects per setting.

Assumptions, since the release ships no annotations and no evaluation code:
* Nose tip: landmark 30 of the LJSON file when given; otherwise the scan vertex with the largest z
  (the 3dMD frontal scans face +z, like the face models).
* Initialisation: with scan landmarks and a reconstruction in the face model's topology, the
  similarity of the 51 inner landmarks (iBUG 17-67; the jaw contour is not a surface point);
  otherwise the translation that puts the reconstruction's nose tip (landmark 30 in the face
  model's topology, else its largest-z vertex) on the scan's: both must then face +z, y up.
* The scan is `frontal1`, or `frontal2` when a subject has no `frontal1` (noted in the report).
* Units: scans in mm (`scan_unit_mm`); reconstructions in the face model's unit when they have its
  topology, else mm (`recon_unit_mm` overrides).
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Optional, Sequence

import numpy as np

from msma_jax.evaluation.alignment import Similarity, fit_similarity, icp
from msma_jax.evaluation.meshes import (Mesh, MeshError, average_shapes, crop_sphere, load_ljson,
                                        load_mesh, mesh_files)
from msma_jax.evaluation.metrics import rmse, summarize
from msma_jax.evaluation.surface import MeshSearch, vertex_normals
from msma_jax.face_model import FaceModel

SETTINGS = ("Indoor-Cooperative", "PTZ-Indoor", "PTZ-Outdoor")
SCANS = ("frontal1", "frontal2")
NOSE_TIP = 30                      # iBUG-68, 0-based
INNER_LANDMARKS = np.arange(17, 68)


@dataclasses.dataclass
class GroundTruth:
  """A subject's scan in mm: all points [N, 3], the crop mask [N], nose tip [3], landmarks [68, 3] or
  None, the file and which scan it is."""
  points: np.ndarray
  crop: np.ndarray
  nose_tip: np.ndarray
  landmarks: Optional[np.ndarray]
  path: pathlib.Path
  scan: str


def find_scan(subject_dir: pathlib.Path) -> tuple[Optional[pathlib.Path], str]:
  """(scan .obj path or None, scan name) of a subject: frontal1, else frontal2."""
  for scan in SCANS:
    folder = subject_dir / "Model" / scan / "obj"
    if folder.is_dir():
      objs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".obj")
      if objs:
        return objs[0], scan
  return None, ""


def find_scan_landmarks(scan_path: pathlib.Path, subject: str, scan: str,
                        landmarks_root: Optional[pathlib.Path]) -> Optional[pathlib.Path]:
  folders = [scan_path.parent]
  if landmarks_root is not None:
    folders.insert(0, landmarks_root / subject / "Model" / scan / "obj")
  for folder in folders:
    if folder.is_dir():
      files = sorted(folder.glob("*.ljson"))
      if files:
        return files[0]
  return None


def load_ground_truth(subject_dir: pathlib.Path, *, landmarks_root=None, scan_unit_mm: float = 1.0,
                      crop_radius_mm: float = 95.0) -> GroundTruth:
  """Reads and crops one subject's scan; MeshError (one line) if it is missing or unreadable."""
  path, scan = find_scan(subject_dir)
  if path is None:
    raise MeshError(f"{subject_dir.name}: no ground-truth scan (expected {subject_dir}/Model/"
                    f"frontal1/obj/*.obj or frontal2)")
  points = load_mesh(path).vertices * scan_unit_mm
  lm_path = find_scan_landmarks(path, subject_dir.name, scan,
                                pathlib.Path(landmarks_root) if landmarks_root else None)
  landmarks = None
  if lm_path is not None:
    lm = load_ljson(lm_path) * scan_unit_mm
    if lm.shape != (68, 3):
      raise MeshError(f"{lm_path}: expected 68 3D iBUG landmarks, got {lm.shape}")
    landmarks = lm
  nose = landmarks[NOSE_TIP] if landmarks is not None and np.all(np.isfinite(landmarks[NOSE_TIP])) \
      else points[np.argmax(points[:, 2])]
  crop = crop_sphere(points, nose, crop_radius_mm)
  return GroundTruth(points, crop, nose, landmarks, path, scan)


def find_reconstruction(recon_root: pathlib.Path, subject: str, setting: str) -> list[pathlib.Path]:
  """Per-frame meshes of RECON_ROOT/subject/setting/, or the single RECON_ROOT/subject/setting.obj."""
  folder = recon_root / subject / setting
  if folder.is_dir():
    return mesh_files(folder)
  for suffix in (".obj", ".ply"):
    single = recon_root / subject / f"{setting}{suffix}"
    if single.is_file():
      return [single]
  return []


def mean_reconstruction(paths: Sequence[pathlib.Path], report, where: str) -> Optional[Mesh]:
  """Loads and averages the frames; unreadable frames and frames whose topology differs from the
  first readable one are excluded (one line each). None when no frame is left."""
  meshes: list[Mesh] = []
  for p in paths:
    try:
      m = load_mesh(p)
    except MeshError as e:
      report.exclude("unreadable mesh", str(e))
      continue
    if meshes and not m.same_topology(meshes[0]):
      report.exclude("different topology",
                     f"{p}: {len(m.vertices)} vertices / {len(m.triangles)} triangles, unlike "
                     f"{where}'s first frame ({len(meshes[0].vertices)} / {len(meshes[0].triangles)})")
      continue
    meshes.append(m)
  if not meshes:
    return None
  return average_shapes(meshes) if len(meshes) > 1 else meshes[0]


def has_model_topology(mesh: Mesh, face_model: FaceModel) -> bool:
  return (len(mesh.vertices) == face_model.n_vertices
          and np.array_equal(mesh.triangles, np.asarray(face_model.triangles)))


@dataclasses.dataclass
class SubjectResult:
  subject: str
  setting: str
  scan: str
  frames: int
  init: str
  rmse_point_to_plane_mm: float
  rmse_point_to_point_mm: float
  icp_scale: float
  icp_iterations: int
  vertex_errors_mm: Optional[np.ndarray] = None     # [V] if the reconstruction has the model's topology


def evaluate_subject(gt: GroundTruth, recon: Mesh, face_model: FaceModel, *, recon_unit_mm: float,
                     crop_radius_mm: float = 95.0) -> dict:
  """Aligns one mean reconstruction to the cropped scan and measures it (all in mm)."""
  v = recon.vertices * recon_unit_mm
  topo = has_model_topology(recon, face_model)
  lm_idx = np.asarray(face_model.landmark_indices)
  if gt.landmarks is not None and topo:
    sel = INNER_LANDMARKS[np.all(np.isfinite(gt.landmarks[INNER_LANDMARKS]), axis=1)]
    init, how = fit_similarity(v[lm_idx[sel]], gt.landmarks[sel]), "landmarks"
  else:
    tip = v[lm_idx[NOSE_TIP]] if topo else v[np.argmax(v[:, 2])]
    init, how = Similarity(1.0, np.eye(3), gt.nose_tip - tip), "nose tip"
  target = gt.points[gt.crop]
  tris = recon.triangles if len(recon.triangles) else None
  result = icp(v, target, source_triangles=tris, init=init, scale=True)
  aligned = result.transform.apply(v)
  search = MeshSearch(aligned)
  if tris is not None:
    normals = vertex_normals(aligned, tris)
    _, idx = search.nearest_vertices(target)
    p2plane = np.abs(np.sum((target - aligned[idx]) * normals[idx], axis=1))
  else:
    p2plane = search.nearest_vertices(target)[0]
  p2point = search.nearest_vertices(target)[0]
  out = {"init": how, "rmse_point_to_plane_mm": rmse(p2plane), "rmse_point_to_point_mm": rmse(p2point),
         "icp_scale": result.transform.scale, "icp_iterations": result.iterations}
  if topo:
    # Per reconstruction vertex: distance to the nearest cropped scan point, inside the crop only.
    d, _ = MeshSearch(target).nearest_vertices(aligned)
    inside = np.linalg.norm(aligned - gt.nose_tip, axis=1) <= crop_radius_mm
    out["vertex_errors_mm"] = np.where(inside, d, np.nan)
  return out


def evaluate_micc(dataset_root, recon_root, face_model: FaceModel, report, *,
                  settings: Sequence[str] = SETTINGS, landmarks_root=None, scan_unit_mm: float = 1.0,
                  recon_unit_mm: Optional[float] = None, crop_radius_mm: float = 95.0,
                  progress: bool = False) -> list[SubjectResult]:
  """Runs the protocol over every subject of dataset_root and recon_root; bad inputs are excluded
  through `report.exclude` (one line each) and never stop the run."""
  dataset_root, recon_root = pathlib.Path(dataset_root), pathlib.Path(recon_root)
  for root, what in ((dataset_root, "MICC dataset"), (recon_root, "reconstruction")):
    if not root.is_dir():
      raise FileNotFoundError(f"{root}: {what} folder not found")
  for s in settings:
    if s not in SETTINGS:
      raise ValueError(f"MICC setting {s!r} is not one of {', '.join(SETTINGS)}")
  subjects = sorted({p.name for root in (dataset_root, recon_root) for p in root.iterdir()
                     if p.is_dir() and p.name.startswith("subject_")})
  if not subjects:
    raise FileNotFoundError(f"{dataset_root}: no subject_XX folders (is this the MICC Florence root?)")
  results: list[SubjectResult] = []
  items = subjects
  if progress:
    from tqdm import tqdm
    items = tqdm(subjects, desc="MICC subjects", unit="subject")
  for subject in items:
    recons = {s: find_reconstruction(recon_root, subject, s) for s in settings}
    if not (dataset_root / subject).is_dir():
      report.exclude("missing scan", f"{subject}: reconstructions given but no subject folder in "
                     f"{dataset_root}")
      continue
    try:
      gt = load_ground_truth(dataset_root / subject, landmarks_root=landmarks_root,
                             scan_unit_mm=scan_unit_mm, crop_radius_mm=crop_radius_mm)
    except MeshError as e:
      report.exclude("missing scan", str(e))
      continue
    if gt.scan != "frontal1":
      report.note(f"{subject}: no frontal1 scan, used {gt.scan} ({gt.path.name})")
    if gt.crop.sum() < 100:
      report.exclude("missing scan", f"{gt.path}: only {int(gt.crop.sum())} scan points within "
                     f"{crop_radius_mm:g} mm of the nose tip")
      continue
    for setting in settings:
      where = f"{subject}/{setting}"
      if not recons[setting]:
        report.exclude("no reconstruction", f"{where}: no reconstruction (expected "
                       f"{recon_root / subject / setting}/*.obj|ply or {setting}.obj|ply)")
        continue
      mean = mean_reconstruction(recons[setting], report, where)
      if mean is None:
        report.exclude("no reconstruction", f"{where}: no usable reconstructed frame")
        continue
      unit = recon_unit_mm if recon_unit_mm is not None else (
          face_model.unit_in_mm if has_model_topology(mean, face_model) else 1.0)
      try:
        r = evaluate_subject(gt, mean, face_model, recon_unit_mm=unit, crop_radius_mm=crop_radius_mm)
      except (ValueError, np.linalg.LinAlgError) as e:
        report.exclude("alignment failed", f"{where}: {e}")
        continue
      n_frames = len(recons[setting])
      results.append(SubjectResult(subject, setting, gt.scan, n_frames, **r))
  return results


def nanmean_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
  """Mean over rows [N, V] ignoring NaN; NaN where a column has no value (no warning)."""
  a = np.stack(rows)
  n = np.isfinite(a).sum(axis=0)
  total = np.where(np.isfinite(a), a, 0.0).sum(axis=0)
  return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def run_micc(out_dir, dataset_root, recon_root, *, face_model: FaceModel | str = "embedded",
             settings: Sequence[str] = SETTINGS, landmarks_root=None, scan_unit_mm: float = 1.0,
             recon_unit_mm: Optional[float] = None, crop_radius_mm: float = 95.0,
             progress: bool = True, log=None, log_fn=None) -> dict:
  """Evaluates and writes report.md, micc_subjects.csv, micc.csv, the curve and heat map."""
  from msma_jax.evaluation.plots import plot_cumulative_errors, plot_vertex_heatmap
  from msma_jax.evaluation.report import Report
  from msma_jax.face_model import load_face_model
  fm = load_face_model(face_model) if isinstance(face_model, str) else face_model
  report = Report(out_dir, "MICC Florence", protocol="micc", log=log, log_fn=log_fn)
  t0 = time.perf_counter()
  results = evaluate_micc(dataset_root, recon_root, fm, report, settings=settings,
                          landmarks_root=landmarks_root, scan_unit_mm=scan_unit_mm,
                          recon_unit_mm=recon_unit_mm, crop_radius_mm=crop_radius_mm,
                          progress=progress)
  report.require(len(results), "subject (a scan with a reconstruction)")
  report.settings.update({
      "dataset": str(dataset_root), "reconstructions": str(recon_root),
      "scan landmarks": str(landmarks_root) if landmarks_root else "none (nose tip = largest z)",
      "crop": f"{crop_radius_mm:g} mm around the nose tip",
      "alignment": "ICP with isotropic scale (point-to-plane), landmark / nose-tip initialisation",
      "distance": "point-to-plane (nearest reconstruction vertex, its normal); RMSE per subject",
      "time (s)": f"{time.perf_counter() - t0:.1f}",
  })
  rows = []
  for s in settings:
    vals = [r.rmse_point_to_plane_mm for r in results if r.setting == s]
    st = summarize(vals)
    rows.append({"setting": s, "subjects": st["n"], "mean_rmse_mm": st["mean"], "std_mm": st["std"],
                 "median_mm": st["median"]})
    if st["n"]:
      report.add_metrics({f"{s}/mean_rmse_mm": st["mean"], f"{s}/std_mm": st["std"]})
  report.add_table("micc", rows, ["setting", "subjects", "mean_rmse_mm", "std_mm", "median_mm"],
                   caption="point-to-plane RMSE per subject: mean ± std over subjects")
  cols = ["subject", "setting", "scan", "frames", "init", "rmse_point_to_plane_mm",
          "rmse_point_to_point_mm", "icp_scale", "icp_iterations"]
  report.add_table("micc_subjects", [dataclasses.asdict(r) for r in results], cols,
                   caption="per subject", formats={"icp_scale": ".4f"})
  if results:
    curve = plot_cumulative_errors({s: [r.rmse_point_to_plane_mm for r in results if r.setting == s]
                                    for s in settings},
                                   report.out_dir / "micc_ced.png", xlabel="per-subject RMSE (mm)",
                                   title="MICC Florence: cumulative error")
    report.add_figure(curve, "cumulative distribution of the per-subject point-to-plane RMSE")
    heat = {s: nanmean_rows([r.vertex_errors_mm for r in results
                             if r.setting == s and r.vertex_errors_mm is not None])
            for s in settings
            if any(r.setting == s and r.vertex_errors_mm is not None for r in results)}
    if heat:
      path = plot_vertex_heatmap(fm, heat, report.out_dir / "micc_vertex_error.png",
                                 title="MICC Florence: mean distance to the scan per vertex")
      report.add_figure(path, "mean distance from each reconstruction vertex to the scan (mm)")
  report.write()
  return {"report": str(report.out_dir / "report.md"), "rows": rows,
          "excluded": {k: len(v) for k, v in report.excluded.items()}, "evaluated": len(results)}
