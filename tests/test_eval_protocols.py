"""Benchmark protocols end to end on fixtures generated in the datasets' own file layouts (MICC
Florence, NoW, AFLW2000-3D), and the synthetic benchmark: the ground truth scores ~0, the mean face
worse. Bad inputs are excluded with one line each and counted."""
import csv
import json

import numpy as np
import pytest
import scipy.io
import trimesh
from scipy.spatial.transform import Rotation

from msma_jax.cli import main
from msma_jax.evaluation.alignment import Similarity


def _csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _write_scan_obj(path, vertices, triangles):
  """An OBJ like a 3dMD export: material library, texture coordinates, f v/vt triples."""
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = ["# scanner export", f"mtllib {path.stem}.mtl", "usemtl material_0"]
  lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
  lines += [f"vt {u:.4f} {w:.4f}" for u, w in np.random.default_rng(0).uniform(size=(len(vertices), 2))]
  lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in np.asarray(triangles) + 1]
  path.write_text("\n".join(lines) + "\n")


def _identity(fm, seed):
  c = fm.zero_coefficients((1,))
  rng = np.random.default_rng(seed)
  c = c.replace(id=np.asarray(rng.normal(size=(1, fm.sizes.id)), np.float32))
  return np.asarray(fm.shape(c)[0], np.float64)


def _posed(v, seed):
  r = Rotation.from_rotvec(np.random.default_rng(seed).normal(size=3) * 0.2).as_matrix()
  return Similarity(1.0, r, np.array([3.0, -4.0, 50.0]) * seed).apply(v)


# ---------------------------------------------------------------------------------------------------
# MICC Florence

@pytest.fixture
def micc(tmp_path, embedded):
  from msma_jax.inference import save_mesh
  fm = embedded
  f = np.asarray(fm.triangles)
  lm = np.asarray(fm.landmark_indices)
  root, recon, lms = tmp_path / "Florence", tmp_path / "recon", tmp_path / "MICC_landmarks"
  scanner = Similarity(1.0, Rotation.from_rotvec([0.02, -0.05, 0.03]).as_matrix(),
                       np.array([5.0, -10.0, 20.0]))       # the scanner's frame, faces +z, mm
  truth = {s: _identity(fm, s) for s in (1, 2)}
  # subject_01: frontal1 scan + 68 LJSON landmarks (GANFit's layout), 3 good frames + 1 of another
  # topology for Indoor-Cooperative, one averaged mean-face mesh for PTZ-Indoor, no PTZ-Outdoor.
  scan1 = root / "subject_01/Model/frontal1/obj/110920150452.obj"
  _write_scan_obj(scan1, scanner.apply(truth[1]), f)
  (root / "subject_01/Video").mkdir(parents=True)
  points = scanner.apply(truth[1][lm]) + np.random.default_rng(3).normal(size=(68, 3))
  ljson = lms / "subject_01/Model/frontal1/obj/110920150452.ljson"
  ljson.parent.mkdir(parents=True)
  ljson.write_text(json.dumps({"version": 2, "labels": [],
                               "landmarks": {"points": points.tolist(), "connectivity": []}}))
  for k in range(3):
    save_mesh(recon / f"subject_01/Indoor-Cooperative/frame_{k:04d}.obj", _posed(truth[1], k), f)
  save_mesh(recon / "subject_01/Indoor-Cooperative/frame_0003.obj", truth[1], f[:-1])
  save_mesh(recon / "subject_01/PTZ-Indoor.ply", np.asarray(fm.mean_shape), f)
  # subject_02: only a frontal2 scan, no landmarks (nose tip = largest z), two good frames.
  _write_scan_obj(root / "subject_02/Model/frontal2/obj/110920151101.obj", scanner.apply(truth[2]), f)
  for k in range(2):
    save_mesh(recon / f"subject_02/Indoor-Cooperative/frame_{k:04d}.ply", _posed(truth[2], k + 5), f)
  # subject_03: reconstructed but absent from the dataset; subject_04: videos only, no scan.
  save_mesh(recon / "subject_03/Indoor-Cooperative.obj", truth[1], f)
  (root / "subject_04/Video").mkdir(parents=True)
  return root, recon, lms


def test_micc_loader_reads_the_release_layout(micc, embedded):
  from msma_jax.evaluation.micc import find_reconstruction, load_ground_truth
  root, recon, lms = micc
  gt = load_ground_truth(root / "subject_01", landmarks_root=lms)
  assert gt.scan == "frontal1" and gt.points.shape == (embedded.n_vertices, 3)
  assert gt.landmarks.shape == (68, 3)
  np.testing.assert_allclose(gt.nose_tip, gt.landmarks[30])
  assert 0.5 < gt.crop.mean() < 1.0                        # 95 mm sphere: the face, not the back
  gt2 = load_ground_truth(root / "subject_02")
  assert gt2.scan == "frontal2" and gt2.landmarks is None
  assert gt2.nose_tip[2] == gt2.points[:, 2].max()
  assert len(find_reconstruction(recon, "subject_01", "Indoor-Cooperative")) == 4
  assert [p.name for p in find_reconstruction(recon, "subject_01", "PTZ-Indoor")] == ["PTZ-Indoor.ply"]
  assert find_reconstruction(recon, "subject_01", "PTZ-Outdoor") == []


def test_micc_protocol_end_to_end(micc, tmp_path, capsys):
  root, recon, lms = micc
  out = tmp_path / "out"
  assert main(["evaluate", "micc", str(root), str(recon), "--landmarks", str(lms), "--out", str(out),
               "--no-progress"]) == 0
  printed = capsys.readouterr()
  subjects = {(r["subject"], r["setting"]): r for r in _csv(out / "micc_subjects.csv")}
  assert set(subjects) == {("subject_01", "Indoor-Cooperative"), ("subject_01", "PTZ-Indoor"),
                           ("subject_02", "Indoor-Cooperative")}
  # The truth, posed differently in every frame, averages back to itself and scores ~0.
  for key in (("subject_01", "Indoor-Cooperative"), ("subject_02", "Indoor-Cooperative")):
    assert float(subjects[key]["rmse_point_to_plane_mm"]) < 0.01
    assert float(subjects[key]["icp_scale"]) == pytest.approx(1.0, abs=1e-4)
  assert subjects[("subject_01", "Indoor-Cooperative")]["init"] == "landmarks"
  assert subjects[("subject_02", "Indoor-Cooperative")]["init"] == "nose tip"
  assert subjects[("subject_01", "Indoor-Cooperative")]["frames"] == "4"
  mean_face = float(subjects[("subject_01", "PTZ-Indoor")]["rmse_point_to_plane_mm"])
  assert mean_face > 0.5
  table = {r["setting"]: r for r in _csv(out / "micc.csv")}
  assert table["Indoor-Cooperative"]["subjects"] == "2" and table["PTZ-Outdoor"]["subjects"] == "0"
  assert float(table["PTZ-Indoor"]["mean_rmse_mm"]) == pytest.approx(mean_face)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["excluded"] == {"different topology": 1, "missing scan": 2, "no reconstruction": 3}
  report = (out / "report.md").read_text()
  assert "frame_0003.obj: 3448 vertices / 6735 triangles" in report
  assert "subject_04: no ground-truth scan" in report and "subject_03: reconstructions given" in report
  assert "subject_02: no frontal1 scan, used frontal2" in report
  assert (out / "micc_ced.png").stat().st_size > 0 and (out / "micc_vertex_error.png").stat().st_size > 0
  # One line per excluded input on stderr; the summary on stdout.
  assert printed.err.count("excluded: ") == 6
  assert "Indoor-Cooperative" in printed.out and "report:" in printed.out


def test_micc_bad_root_is_one_line(tmp_path, capsys):
  assert main(["evaluate", "micc", str(tmp_path / "nope"), str(tmp_path), "--out",
               str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "nope: MICC dataset folder not found" in err


# ---------------------------------------------------------------------------------------------------
# NoW

def _pp(path, points):
  path.parent.mkdir(parents=True, exist_ok=True)
  rows = "\n".join(f' <point x="{x}" y="{y}" z="{z}" active="1" name="{i}"/>'
                   for i, (x, y, z) in enumerate(points))
  path.write_text(f"""<!DOCTYPE PickedPoints>
<PickedPoints>
 <DocumentData>
  <DateTime time="16:00:00" date="2019-01-01"/>
  <User name="annotator"/>
  <DataFileName name="scan.obj"/>
  <templateName name=""/>
 </DocumentData>
{rows}
</PickedPoints>
""")


@pytest.fixture
def now(tmp_path, embedded):
  from msma_jax.evaluation.now import NOW_LANDMARKS_IBUG
  from msma_jax.inference import save_mesh
  fm = embedded
  f = np.asarray(fm.triangles)
  idx7 = np.asarray(fm.landmark_indices)[list(NOW_LANDMARKS_IBUG)]
  root, pred = tmp_path / "NoW_Dataset/final_release_version", tmp_path / "predictions"
  subject = "FaMoS_180424_03335_TA"
  truth = _identity(fm, 11)
  scanner = Similarity(1.0, Rotation.from_rotvec([0.1, 0.3, -0.05]).as_matrix(),
                       np.array([0.0, 40, -900]))
  # A denser scan of the same surface: one midpoint subdivision keeps every point on it.
  sv, sf = trimesh.remesh.subdivide(scanner.apply(truth), f)
  _write_scan_obj(root / f"scans/{subject}/natural_head_rotation.000001.obj", sv, sf)
  _pp(root / f"scans_lmks_onlypp/{subject}/natural_head_rotation.000001_picked_points.pp",
      scanner.apply(truth[idx7]))
  (root / "imagepathsvalidation.txt").write_text("\n".join([
      f"{subject}/multiview_neutral/IMG_0041.jpg", f"{subject}/selfie/IMG_0050.jpg",
      "FaMoS_180425_03336_TA/multiview_expressions/IMG_0101.jpg",
      f"{subject}/multiview_occlusions/IMG_0060.jpg", ""]))
  # The truth (FLAME-like units: metres) with its 7 landmarks; the mean face without a landmark file.
  save_mesh(pred / f"{subject}/multiview_neutral/IMG_0041.obj", _posed(truth, 2) / 1000.0, f)
  np.save(pred / f"{subject}/multiview_neutral/IMG_0041.npy", _posed(truth, 2)[idx7] / 1000.0)
  save_mesh(pred / f"{subject}/selfie/IMG_0050.ply", np.asarray(fm.mean_shape), f)
  return root, pred, subject


def test_now_loaders_read_the_release_layout(now):
  from msma_jax.evaluation.now import load_scan, now_face_crop, read_image_list
  root, pred, subject = now
  entries = read_image_list(root / "imagepathsvalidation.txt")
  assert entries[0] == (subject, "multiview_neutral", "IMG_0041.jpg") and len(entries) == 4
  scan = load_scan(root, subject)
  assert scan.landmarks.shape == (7, 3)
  centre, radius = now_face_crop(scan.landmarks)
  # The mask by hand: 0.3 of the way from the nose bottom to the inner-eye midpoint.
  lm = scan.landmarks
  bridge = (lm[1] + lm[2]) / 2
  np.testing.assert_allclose(centre, lm[4] + 0.3 * (bridge - lm[4]))
  assert radius == pytest.approx(0.7 * (np.linalg.norm(lm[0] - lm[3]) + np.linalg.norm(bridge - lm[4])))
  assert np.all(np.linalg.norm(scan.points - centre, axis=1) <= radius) and len(scan.points) > 1000


def test_now_protocol_end_to_end(now, tmp_path, capsys):
  root, pred, subject = now
  out = tmp_path / "out"
  assert main(["evaluate", "now", str(root), str(pred), "--out", str(out), "--no-progress"]) == 0
  images = {r["image"]: r for r in _csv(out / "now_images.csv")}
  assert set(images) == {"IMG_0041.jpg", "IMG_0050.jpg"}
  assert float(images["IMG_0041.jpg"]["mean_mm"]) < 0.01      # metres rescaled by the alignment
  assert float(images["IMG_0050.jpg"]["median_mm"]) > 0.3      # the mean face, via model topology
  rows = {r["challenge"]: r for r in _csv(out / "now.csv")}
  assert rows["all"]["images"] == "2" and rows["multiview_expressions"]["images"] == "0"
  assert float(rows["selfie"]["mean_mm"]) > float(rows["multiview_neutral"]["mean_mm"])
  assert json.loads((out / "summary.json").read_text())["excluded"] == {
      "missing scan": 1, "no reconstruction": 1}
  err = capsys.readouterr().err
  assert "FaMoS_180425_03336_TA: no ground-truth scan" in err
  assert f"{subject}/multiview_occlusions/IMG_0060.jpg: no predicted mesh" in err
  assert (out / "now_ced.png").stat().st_size > 0 and (out / "now_vertex_error.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------------
# AFLW2000-3D

@pytest.fixture
def aflw(tmp_path, embedded):
  """Photos whose ground truth is the mean face's landmarks placed by a known similarity; a smooth
  gradient image, so the crop can be checked pixel by pixel."""
  from msma_jax import camera as cam
  fm = embedded
  camera = cam.Camera.for_face_model(fm, 224)
  world = np.asarray(fm.landmarks_3d(fm.mean_shape), np.float64)
  ref = np.concatenate([np.asarray(cam.project(world, camera)),
                        world[:, 2:] * camera.focal / camera.distance], 1)      # [68, 3] crop px
  folder = tmp_path / "AFLW2000"
  folder.mkdir()
  xs = np.arange(450, dtype=np.float32)
  gradient = np.stack([np.broadcast_to(xs[None, :] / 450, (450, 450)),
                       np.broadcast_to(xs[:, None] / 450, (450, 450)), np.full((450, 450), 0.5)], -1)
  import cv2
  placements = {"image00002": (1.3, (60.0, 40.0), 12.0), "image00004": (1.1, (100.0, 90.0), -47.0),
                "image00006": (1.6, (30.0, 20.0), 75.0), "image00008": (0.9, (120.0, 150.0), 95.0)}
  truth = {}
  for name, (a, b, yaw) in placements.items():
    gt = ref * a
    gt[:, :2] += b
    if name == "image00004":
      gt[27:36, :2] += [3.0, 4.0]          # the nose 5 px off, inside the box (box unchanged)
    truth[name] = (a, np.array(b), gt)
    cv2.imwrite(str(folder / f"{name}.jpg"), (gradient[..., ::-1] * 255).round().astype(np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, 100])
    mat = gt.T.copy()
    mat[:2] += 0.5                         # MATLAB's 1-based pixel centres
    scipy.io.savemat(str(folder / f"{name}.mat"), {
        "pt3d_68": mat, "Pose_Para": np.array([[0.1, np.radians(yaw), -0.05, 200, 210, 0, 0.001]]),
        "Shape_Para": np.zeros((199, 1)), "Exp_Para": np.zeros((29, 1)),
        "roi": np.array([[0, 0, 450, 450]])})
  cv2.imwrite(str(folder / "image00010.jpg"), np.zeros((8, 8, 3), np.uint8))   # no annotation
  cv2.imwrite(str(folder / "image00012.jpg"), np.zeros((8, 8, 3), np.uint8))
  scipy.io.savemat(str(folder / "image00012.mat"), {"pts": np.zeros((2, 68))})   # wrong keys
  return tmp_path, truth, ref


def test_aflw2000_loader_and_crop(aflw, embedded):
  from msma_jax.evaluation.aflw2000 import (crop_transform, cut_crop, dataset_folder, load_sample,
                                            reference_box)
  root, truth, ref = aflw
  folder = dataset_folder(root)                             # finds the AFLW2000 subfolder
  s = load_sample(folder / "image00006.jpg")
  a, b, gt = truth["image00006"]
  np.testing.assert_allclose(s.landmarks, gt, atol=1e-9)
  assert s.yaw_deg == pytest.approx(75.0) and s.image.shape == (450, 450, 3)
  centre, size = reference_box(embedded)
  k, shift = crop_transform(s.landmarks[:, :2], centre, size)
  assert k == pytest.approx(1 / a) and np.allclose(k * gt[:, :2] + shift, ref[:, :2])
  np.testing.assert_allclose(s.image[200, :, 0], np.arange(450) / 450, atol=3 / 255)   # JPEG
  # Crop pixel (u, v) samples the photo at ((u, v) + 0.5 - shift) / k (pixel centres at +0.5); on
  # the exact (not JPEG-compressed) gradient, whose red channel is (x - 0.5) / 450 and green
  # (y - 0.5) / 450, bilinear sampling is exact. Half a pixel off would be 1e-3 off.
  xs = np.arange(450, dtype=np.float32)
  gradient = np.stack([np.broadcast_to(xs[None, :] / 450, (450, 450)),
                       np.broadcast_to(xs[:, None] / 450, (450, 450)), np.full((450, 450), 0.5)], -1)
  crop = cut_crop(np.ascontiguousarray(gradient, np.float32), k, shift)
  u = np.arange(60, 160)
  np.testing.assert_allclose(crop[100, 60:160, 0], ((u + 0.5 - shift[0]) / k - 0.5) / 450, atol=2e-5)
  np.testing.assert_allclose(crop[60:160, 100, 1], ((u + 0.5 - shift[1]) / k - 0.5) / 450, atol=2e-5)


def test_aflw2000_protocol(aflw, embedded, tmp_path, capsys):
  from msma_jax.evaluation.aflw2000 import run_aflw2000
  from msma_jax.evaluation.predictors import MeanFacePredictor
  root, truth, ref = aflw
  seen = []

  class Recording(MeanFacePredictor):
    name = "recording mean face"

    def __call__(self, images, landmarks):
      seen.append((images.shape, landmarks))
      return super().__call__(images, landmarks)

  out = run_aflw2000(tmp_path / "out", root, predictor=Recording(embedded), face_model=embedded,
                     batch_size=3, progress=False)
  assert [s[0] for s in seen] == [(3, 224, 224, 3), (1, 224, 224, 3)]
  # The predictor's landmark input is the ground truth mapped into the crop: the mean face's there.
  np.testing.assert_allclose(seen[0][1][0], ref[:, :2], atol=1e-3)
  per_image = {r["name"]: r for r in _csv(tmp_path / "out/aflw2000_images.csv")}
  # The mean face is exactly the ground truth of image00002/6/8 (2D and 3D)...
  for name in ("image00002", "image00006", "image00008"):
    assert float(per_image[name]["nme_2d_percent"]) < 1e-3
    assert float(per_image[name]["nme_3d_percent"]) < 1e-3
  # ...and 9 of image00004's 68 points are 5 px off: NME = 9 · 5 / 68 / (1.1 · reference box size).
  from msma_jax.evaluation.aflw2000 import reference_box
  expected = 100 * 9 * 5 / 68 / (1.1 * reference_box(embedded)[1])
  assert float(per_image["image00004"]["nme_2d_percent"]) == pytest.approx(expected, rel=1e-4)
  bins = {r["bin"]: r for r in _csv(tmp_path / "out/aflw2000.csv")}
  assert [bins[b]["images"] for b in ("yaw 0-30", "yaw 30-60", "yaw 60-90")] == ["1", "1", "2"]
  balanced = float(bins["balanced (mean of bins)"]["nme_2d_percent"])
  assert balanced == pytest.approx(expected / 3, rel=1e-4)
  assert out["excluded"] == {"missing or bad annotation": 2}
  err = capsys.readouterr().err
  assert "image00010.mat: annotation file not found" in err
  assert "image00012.mat: missing keys ['pt3d_68', 'Pose_Para']" in err


def test_aflw2000_cli(aflw, tmp_path, capsys, monkeypatch):
  root, _, _ = aflw
  monkeypatch.setenv("WANDB_MODE", "disabled")          # --wandb opens a run; disabled: no network
  assert main(["evaluate", "aflw2000", str(root), "--out", str(tmp_path / "o"), "--limit", "2",
               "--no-progress", "--wandb", "msma-test"]) == 0
  out = capsys.readouterr().out
  assert "balanced" in out and "report:" in out
  assert main(["evaluate", "aflw2000", str(root), "--out", str(tmp_path / "o"),
               "--predictor", "no_such_predictor"]) == 2
  assert "not a registered name" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# Synthetic benchmark

def test_synthetic_set_is_fixed_and_binned(embedded):
  from msma_jax.evaluation.synthetic import SYNTHETIC_VERSION, fingerprint, synthetic_coefficients
  c1, bg1, bins = synthetic_coefficients(embedded, per_cell=3, seed=0)
  c2, bg2, _ = synthetic_coefficients(embedded, per_cell=3, seed=0)
  np.testing.assert_array_equal(np.asarray(c1.to_flat()), np.asarray(c2.to_flat()))
  assert fingerprint(c1) == fingerprint(c2) != fingerprint(synthetic_coefficients(embedded, 3, 1)[0])
  # Faces are seeded on their own: a smaller set is the first faces of each cell of a larger one.
  c_small = np.asarray(synthetic_coefficients(embedded, per_cell=1, seed=0)[0].to_flat())
  np.testing.assert_array_equal(c_small, np.asarray(c1.to_flat())[::3])
  assert SYNTHETIC_VERSION == "synthetic-v1" and len(bg1) == 36
  yaw = np.degrees(np.abs(np.asarray(c1.angle)[:, 1]))
  for name, (lo, hi) in (("yaw 0-30", (0, 30)), ("yaw 30-60", (30, 60)), ("yaw 60-80", (60, 80))):
    sel = bins["yaw"] == name
    assert sel.sum() == 12 and np.all((yaw[sel] >= lo) & (yaw[sel] <= hi))
  exp = np.asarray(c1.exp)
  assert np.all(exp[bins["expression"] == "neutral"] == 0)
  assert np.all(np.count_nonzero(exp[bins["expression"] == "expressive"], axis=1) == 1)
  gamma = np.asarray(c1.gamma).reshape(-1, 3, 9)
  assert np.all(gamma[bins["lighting"] == "ambient"][:, :, 1:] == 0)
  assert np.all(np.abs(gamma[bins["lighting"] == "directional"][:, :, 1:4]).sum(axis=(1, 2)) > 0.3)


def test_synthetic_benchmark_truth_scores_zero_and_mean_face_worse(tmp_path, capsys):
  out = tmp_path / "syn"
  assert main(["evaluate", "synthetic", "--per-cell", "1", "--oracle", "--out", str(out),
               "--no-progress"]) == 0
  printed = capsys.readouterr().out
  rows = _csv(out / "synthetic.csv")
  oracle = [r for r in rows if r["predictor"].startswith("oracle")]
  mean = [r for r in rows if r["predictor"] == "mean face"]
  assert len(oracle) == len(mean) == 8            # all, 3 yaw, 2 expression, 2 lighting bins
  for o, m in zip(oracle, mean):
    assert o["bin"] == m["bin"]
    assert float(o["vertex_rmse_rigid_mm"]) < 1e-4 and float(o["vertex_rmse_similarity_mm"]) < 1e-4
    assert float(o["nme_2d_percent"]) < 1e-3 and float(o["pose_error_deg"]) < 1e-3
    assert float(m["vertex_rmse_rigid_mm"]) > 1.0 and float(m["nme_2d_percent"]) > 1.0
    assert float(m["vertex_rmse_similarity_mm"]) <= float(m["vertex_rmse_rigid_mm"]) + 1e-9
  by_bin = {m["bin"]: m for m in mean}
  # The mean face is frontal: its landmark error grows with the yaw of the faces.
  assert (float(by_bin["yaw 0-30"]["nme_2d_percent"]) < float(by_bin["yaw 30-60"]["nme_2d_percent"])
          < float(by_bin["yaw 60-80"]["nme_2d_percent"]))
  summary = json.loads((out / "summary.json").read_text())
  assert summary["settings"]["version"] == "synthetic-v1"
  assert summary["metrics"]["eval/synthetic/mean_face/all/vertex_rmse_rigid_mm"] == pytest.approx(
      float(by_bin["all"]["vertex_rmse_rigid_mm"]))
  for png in ("synthetic_vertex_rmse_ced.png", "synthetic_nme2d_ced.png", "synthetic_vertex_error.png"):
    assert (out / png).stat().st_size > 10000
  assert "mean face" in printed and "fingerprint" in printed
