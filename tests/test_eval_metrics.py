"""Evaluation metrics against hand-computed values on tiny meshes; Procrustes and ICP recover known
similarity transforms; predictors and the report writer behave as documented."""
import json

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from msma_jax.evaluation import metrics
from msma_jax.evaluation.alignment import (Similarity, fit_similarity, icp, rotation_angle_degrees,
                                           rotation_from_vector)
from msma_jax.evaluation.surface import MeshSearch, vertex_normals

SQUARE = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
TRIANGLE = (np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))


def test_aligned_vertex_errors_hand_values():
  gt = 2.0 * SQUARE                                   # the same square, twice as large
  # No alignment: |p - 2p| = |p|.
  np.testing.assert_allclose(metrics.aligned_vertex_errors(SQUARE, gt, align="none"),
                             [0, 1, 1, np.sqrt(2)], atol=1e-12)
  # Rigid: centroids coincide, corners at (±0.5, ±0.5) vs (±1, ±1): each off by sqrt(0.5).
  np.testing.assert_allclose(metrics.aligned_vertex_errors(SQUARE, gt, align="rigid"),
                             np.full(4, np.sqrt(0.5)), atol=1e-12)
  assert metrics.vertex_rmse(SQUARE, gt, align="rigid", unit_in_mm=10.0) == pytest.approx(
      10 * np.sqrt(0.5))
  # Similarity absorbs the scale.
  assert metrics.vertex_rmse(SQUARE, gt, align="similarity") == pytest.approx(0.0, abs=1e-12)
  # The mask restricts the fit: fitted on three corners that only moved by +1 in x, the fourth
  # corner's own offset (+1 x, +3 y) leaves it 3 away.
  moved = SQUARE + [1.0, 0, 0]
  moved[3] += [0, 3, 0]
  e = metrics.aligned_vertex_errors(SQUARE, moved, np.array([1, 1, 1, 0], bool), align="rigid")
  np.testing.assert_allclose(e, [0, 0, 0, 3], atol=1e-12)
  with pytest.raises(ValueError, match="same topology"):
    metrics.aligned_vertex_errors(SQUARE, SQUARE[:3])


def test_rigid_rmse_is_pose_invariant(embedded, rng):
  v = np.asarray(embedded.mean_shape, np.float64)
  pose = Similarity(1.0, Rotation.from_rotvec([0.3, -0.2, 0.1]).as_matrix(), np.array([5.0, 6, 7]))
  moved = pose.apply(v)
  assert metrics.vertex_rmse(moved, v, np.asarray(embedded.face_mask)) < 1e-9
  noisy = v + rng.normal(size=v.shape)                 # N(0, 1) per coordinate: RMSE ≈ sqrt(3)
  assert metrics.vertex_rmse(noisy, v, align="none") == pytest.approx(np.sqrt(3), rel=0.03)


def test_landmark_nme_and_bbox_hand_values():
  gt = np.array([[0.0, 0], [10, 0], [0, 20], [10, 20]])   # box 10 x 20: sqrt(200)
  assert metrics.bbox_size(gt) == pytest.approx(np.sqrt(200))
  pred = gt + [3.0, 4.0]                                  # every point 5 px off
  assert metrics.landmark_nme(pred, gt) == pytest.approx(5 / np.sqrt(200))
  assert metrics.landmark_nme(pred, gt, normalizer=5.0) == pytest.approx(1.0)
  # Batched, 3D: one face exact, one with a 2-unit z offset on half its points.
  gt3 = np.concatenate([gt, np.zeros((4, 1))], 1)
  pred3 = np.stack([gt3, gt3 + np.array([[0, 0, 2]] * 2 + [[0, 0, 0]] * 2)])
  np.testing.assert_allclose(metrics.landmark_nme(pred3, np.stack([gt3, gt3])),
                             [0.0, 1.0 / np.sqrt(200)])
  with pytest.raises(ValueError, match="positive"):
    metrics.landmark_nme(gt, np.zeros((4, 2)))


@pytest.mark.parametrize("point, surface, vertex, plane", [
    ((0.25, 0.25, 2.0), 2.0, np.sqrt(0.125 + 4), 2.0),     # above the interior
    ((2.0, 0.0, 0.0), 1.0, 1.0, 0.0),                      # beyond corner (1, 0, 0), in the plane
    ((0.8, 0.8, 0.0), np.sqrt(0.18), np.sqrt(0.68), 0.0),  # beyond the hypotenuse: (0.5, 0.5, 0)
    ((-1.0, -1.0, 1.0), np.sqrt(3), np.sqrt(3), 1.0),      # beyond corner (0, 0, 0)
])
def test_scan_to_mesh_distances_on_one_triangle(point, surface, vertex, plane):
  v, f = TRIANGLE
  p = np.array([point])
  assert metrics.point_to_surface_distances(p, v, f)[0] == pytest.approx(surface)
  assert metrics.point_to_point_distances(p, v)[0] == pytest.approx(vertex)
  assert metrics.point_to_plane_distances(p, v, f)[0] == pytest.approx(plane)


def test_vertex_normals_and_closest_point_ids():
  # A tent: two slopes of two triangles each meeting at the ridge x = 0, ±45°. All four triangles
  # have area sqrt(2)/2; face normals (-1, 0, 1)/sqrt(2) on the left, (1, 0, 1)/sqrt(2) on the right.
  v = np.array([[-1.0, 0, 0], [0, 0, 1], [1, 0, 0], [-1, 1, 0], [0, 1, 1], [1, 1, 0]])
  f = np.array([[0, 1, 3], [1, 4, 3], [1, 2, 4], [2, 5, 4]])
  n = vertex_normals(v, f)
  # Ridge vertex 1 touches two left triangles and one right one: (-1, 0, 3) / sqrt(10).
  np.testing.assert_allclose(n[1], np.array([-1, 0, 3]) / np.sqrt(10), atol=1e-12)
  np.testing.assert_allclose(n[4], np.array([1, 0, 3]) / np.sqrt(10), atol=1e-12)
  np.testing.assert_allclose(n[0], [-1 / np.sqrt(2), 0, 1 / np.sqrt(2)], atol=1e-12)
  cp, d, tri = MeshSearch(v, f).closest(np.array([[0.5, 0.5, 2.0], [0.5, 0.5, 0.6]]))
  # Exact: (0.5, 0.5, 2) projects onto the plane x + z = 1 at (-0.25, 0.5, 1.25), outside the right
  # slope (x >= 0), so the closest point is on the ridge: (0, 0.5, 1), distance sqrt(0.25 + 1).
  np.testing.assert_allclose(cp[0], [0.0, 0.5, 1.0], atol=1e-12)
  assert d[0] == pytest.approx(np.sqrt(1.25))
  # (0.5, 0.5, 0.6) is 0.1 / sqrt(2) above the right slope, inside it: triangle 2 or 3.
  np.testing.assert_allclose(cp[1], [0.45, 0.5, 0.55], atol=1e-12)
  assert tri[1] in (2, 3) and d[1] == pytest.approx(0.1 / np.sqrt(2))


def test_summaries_and_cumulative_error():
  s = metrics.summarize([1.0, 2.0, 3.0, 4.0, np.nan])
  assert s == {"n": 4, "mean": 2.5, "std": pytest.approx(np.sqrt(1.25)), "median": 2.5}
  assert metrics.summarize([])["n"] == 0
  np.testing.assert_allclose(metrics.cumulative_error([1, 2, 2, 4], [0, 1, 2, 3, 5]),
                             [0, 0.25, 0.75, 0.75, 1.0])
  assert metrics.rmse([3.0, 4.0]) == pytest.approx(np.sqrt(12.5))


def test_fit_similarity_recovers_transform_and_never_reflects(rng):
  x = rng.normal(size=(10, 3))
  true = Similarity(2.5, Rotation.from_rotvec([0.4, 0.1, -0.7]).as_matrix(), np.array([1.0, -2, 3]))
  got = fit_similarity(x, true.apply(x))
  assert got.scale == pytest.approx(2.5)
  np.testing.assert_allclose(got.rotation, true.rotation, atol=1e-12)
  np.testing.assert_allclose(got.translation, true.translation, atol=1e-12)
  rigid = fit_similarity(x, true.apply(x), scale=False)
  assert rigid.scale == 1.0 and np.linalg.det(rigid.rotation) == pytest.approx(1.0)
  mirrored = x * [-1.0, 1, 1]
  assert np.linalg.det(fit_similarity(x, mirrored).rotation) == pytest.approx(1.0)
  # Composition and inverse.
  other = Similarity(0.5, rotation_from_vector([0, 0, np.pi / 2]), np.array([0.0, 1, 0]))
  np.testing.assert_allclose(true.compose(other).apply(x), true.apply(other.apply(x)), atol=1e-12)
  np.testing.assert_allclose(true.inverse().apply(true.apply(x)), x, atol=1e-12)
  np.testing.assert_allclose(rotation_from_vector([0, 0, np.pi / 2]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
  assert rotation_angle_degrees(rotation_from_vector([0.0, 0.3, 0.0])) == pytest.approx(np.degrees(0.3))


@pytest.fixture(scope="module")
def perturbed_face():
  """The embedded mean face under a known similarity, re-sampled as a 95 mm scan crop."""
  from msma_jax.face_model import load_face_model
  fm = load_face_model("embedded")
  v = np.asarray(fm.mean_shape, np.float64)
  f = np.asarray(fm.triangles)
  lm = np.asarray(fm.landmark_indices)
  axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
  true = Similarity(1.08, Rotation.from_rotvec(np.radians(7.0) * axis).as_matrix(),
                    np.array([12.0, -7.0, 30.0]))
  scan = trimesh.Trimesh(true.apply(v), f, process=False)
  points, _ = trimesh.sample.sample_surface(scan, 12000, seed=1)     # not the model's vertices
  nose = true.apply(v[lm[30]])
  points = points[np.linalg.norm(points - nose, axis=1) < 95.0 * 1.08]
  return v, f, lm, true, points, nose


@pytest.mark.parametrize("init_kind", ["landmarks", "nose_tip"])
def test_icp_recovers_known_similarity(perturbed_face, rng, init_kind):
  v, f, lm, true, points, nose = perturbed_face
  if init_kind == "landmarks":                 # noisy landmark picks (2 mm) on the scan
    init = fit_similarity(v[lm], true.apply(v[lm]) + rng.normal(size=(68, 3)) * 2.0)
  else:                                        # translation only: 7° and 8 % away
    init = Similarity(1.0, np.eye(3), nose - v[lm[30]])
  start_error = rotation_angle_degrees(init.rotation.T @ true.rotation)
  result = icp(v, points, source_triangles=f, init=init, max_points=3000)
  assert result.converged
  err_deg = rotation_angle_degrees(result.transform.rotation.T @ true.rotation)
  assert start_error > 0.3 and err_deg < 0.1
  assert abs(result.transform.scale / true.scale - 1.0) < 1e-3
  np.testing.assert_allclose(result.transform.translation, true.translation, atol=0.1)
  assert result.rmse < 0.01


def test_icp_point_to_point_and_rigid_modes(perturbed_face):
  v, f, lm, true, points, nose = perturbed_face
  init = fit_similarity(v[lm], true.apply(v[lm]))
  # Point-to-point from a near-exact start stays there; rigid mode never changes the scale.
  r = icp(v, points, source_triangles=f, init=init, method="point_to_point", max_points=2000,
          max_iterations=5)
  assert rotation_angle_degrees(r.transform.rotation.T @ true.rotation) < 0.1
  rigid = icp(v, points, source_triangles=f, init=Similarity(1.0, init.rotation, init.translation),
              scale=False, max_points=2000, max_iterations=8)
  assert rigid.transform.scale == 1.0 and rigid.rmse > 0.5           # a 1.08x scan cannot fit at 1x
  with pytest.raises(ValueError, match="target points"):
    icp(v, points[:3], source_triangles=f)


def test_predictors(embedded, monkeypatch):
  from msma_jax.evaluation import predictors
  from msma_jax.evaluation.predictors import (MeanFacePredictor, OraclePredictor, PredictorError,
                                              predict_checked, register_predictor,
                                              resolve_predictor)
  monkeypatch.setattr(predictors, "_REGISTRY", dict(predictors._REGISTRY))   # no leak to other tests
  from msma_jax.face_model import Coefficients
  images = np.random.default_rng(1).uniform(size=(3, 8, 8, 3)).astype(np.float32)
  lms = np.zeros((3, 68, 2), np.float32)
  mean = resolve_predictor("mean", embedded)
  assert isinstance(mean, MeanFacePredictor)
  assert np.all(np.asarray(predict_checked(mean, images, lms, embedded).to_flat()) == 0)
  gt = Coefficients.from_flat(np.arange(3 * 110, dtype=np.float32).reshape(3, 110), embedded.sizes)
  oracle = OraclePredictor(images, gt)
  out = oracle(images[::-1], lms)                                    # looked up by content
  np.testing.assert_array_equal(np.asarray(out.to_flat()), np.asarray(gt.to_flat())[::-1])
  with pytest.raises(PredictorError, match="not one of the images"):
    oracle(images + 0.5, lms)
  register_predictor("test_half",
                     lambda fm, arg: lambda im, lm: Coefficients.zeros(fm.sizes, (len(im) // 2,)))
  with pytest.raises(PredictorError, match=r"returned batch \(1,\) for 3 images"):
    predict_checked(resolve_predictor("test_half", embedded), images, lms, embedded)
  with pytest.raises(PredictorError, match="not a registered name"):
    resolve_predictor("nonsense", embedded)
  with pytest.raises(PredictorError, match="cannot load"):
    resolve_predictor("msma_jax.nowhere:factory", embedded)
  # A factory by import path, with its argument.
  p = resolve_predictor("test_eval_metrics:_factory:7", embedded)
  assert p.name == "seven" and p.arg == "7"


class _Seven:
  name = "seven"

  def __init__(self, arg):
    self.arg = arg

  def __call__(self, images, landmarks):
    raise NotImplementedError


def _factory(face_model, arg):
  return _Seven(arg)


def test_report_tables_exclusions_and_log_fn(tmp_path):
  from msma_jax.evaluation.report import Report
  logged, lines = [], []

  class Run:                                   # quacks like a W&B run
    def log(self, d):
      logged.append(d)

  r = Report(tmp_path, "T", protocol="demo", log=lines.append, log_fn=Run())
  r.add_table("t", [{"a": "x", "b": 1.23456}, {"a": "y", "b": float("nan")}], ["a", "b"], caption="cap")
  r.exclude("missing scan", "subject_02: no scan")
  r.exclude("missing scan", "subject_03: no scan")
  r.add_metrics({"m": 2.0})
  r.write()
  md = (tmp_path / "report.md").read_text()
  assert "| x | 1.23 |" in md and "| y | — |" in md and "| missing scan | 2 |" in md
  assert (tmp_path / "t.csv").read_text().splitlines() == ["a,b", "x,1.23456", "y,nan"]
  assert lines == ["excluded: subject_02: no scan", "excluded: subject_03: no scan"]
  assert logged == [{"eval/demo/m": 2.0, "eval/demo/excluded/missing scan": 2}]
  assert json.loads((tmp_path / "summary.json").read_text())["excluded"] == {"missing scan": 2}
