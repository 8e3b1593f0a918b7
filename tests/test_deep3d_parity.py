"""Deep3DFaceRecon parity: its vertex normals, its crop alignment, its weights from the command line.

The references here are independent NumPy / PIL transcriptions of Deep3DFaceRecon's definitions
(models/bfm.py `compute_norm`, util/preprocess.py `POS`, `resize_n_crop_img`, `align_img`) written
from their formulas, on small generated files in its layouts (the BFM itself is licensed).
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import scipy.io
from PIL import Image

from bfm_fixtures import bfm_front_dict, point_buf_table
from cli_corpus import assert_one_line, run_cli
from data_pipelines.alignment import warp_to_crop
from data_pipelines.deep3d_alignment import (Deep3DAligner, Deep3DAlignError, deep3d_crop,
                                             load_standard_points, pos)
from data_pipelines.landmarks import five_points
from msma_jax.face_model import load_face_model
from msma_jax.face_model.io import FaceModelError, bfm_front_arrays_to_model, with_normals


# ---- vertex normals ---------------------------------------------------------------------------------

def numpy_point_buf_normals(vertices, tri, point_buf_1based):
  """Deep3DFaceRecon's definition: unit triangle normals (v1 - v2) x (v2 - v3), a zero normal
  appended, summed over point_buf - 1 per vertex, renormalised."""
  v1, v2, v3 = (vertices[..., tri[:, i], :] for i in range(3))
  fn = np.cross(v1 - v2, v2 - v3)
  fn = fn / np.linalg.norm(fn, axis=-1, keepdims=True)
  fn = np.concatenate([fn, np.zeros_like(fn[..., :1, :])], axis=-2)
  vn = fn[..., point_buf_1based.astype(np.int64) - 1, :].sum(-2)
  return vn / np.linalg.norm(vn, axis=-1, keepdims=True)


@pytest.mark.parametrize("pad", ["zero", "f_plus_one"])
def test_point_buf_normals_match_the_definition(pad):
  rng = np.random.default_rng(0)
  d = bfm_front_dict(rng, n=9)
  tri = d["tri"].astype(np.int64) - 1
  nv = d["meanshape"].size // 3
  d["point_buf"] = point_buf_table(tri, nv, pad=0 if pad == "zero" else len(tri) + 1)
  fm = bfm_front_arrays_to_model(d, source="test")
  assert fm.normal_mode == "point_buf"
  verts = np.asarray(fm.mean_shape, np.float64) + rng.normal(0, 0.02, (nv, 3))   # a bumpy mesh
  got = np.asarray(fm.vertex_normals(verts.astype(np.float32)), np.float64)
  want = numpy_point_buf_normals(verts, tri, d["point_buf"])
  np.testing.assert_allclose(got, want, atol=2e-6)
  # the area-weighted normals are a different thing on this mesh (what the option switches)
  area = np.asarray(with_normals(fm, "area").vertex_normals(verts.astype(np.float32)))
  assert with_normals(fm, "area").normal_mode == "area"
  assert np.degrees(np.arccos(np.clip((area * got).sum(-1), -1, 1))).max() > 0.5


def test_normal_modes_and_their_errors(tmp_path):
  assert load_face_model("embedded").normal_mode == "area"
  with pytest.raises(FaceModelError, match="no point_buf"):
    load_face_model("embedded", normals="point_buf")
  with pytest.raises(FaceModelError, match="normals must be one of"):
    load_face_model("embedded", normals="unit")
  d = bfm_front_dict(np.random.default_rng(1), n=9)
  d["point_buf"][0, 0] = 10_000                                   # beyond the triangles
  scipy.io.savemat(str(tmp_path / "bad.mat"), d)
  with pytest.raises(FaceModelError, match="'point_buf' must be"):
    load_face_model(tmp_path / "bad.mat")


def test_point_buf_survives_npz_and_drives_the_render_shading(tmp_path):
  from msma_jax import lighting
  from msma_jax.face_model import save_npz
  d = bfm_front_dict(np.random.default_rng(2), n=10)
  scipy.io.savemat(str(tmp_path / "BFM_model_front.mat"), d)
  fm = load_face_model(tmp_path / "BFM_model_front.mat")
  again = load_face_model(save_npz(fm, tmp_path / "bfm.npz"))
  np.testing.assert_array_equal(np.asarray(again.point_buf), np.asarray(fm.point_buf))
  assert fm.source.endswith("BFM_model_front.mat")
  # render_face shades with the model's normals: its normal map equals point_buf normals
  import jax.numpy as jnp
  from msma_jax import camera as cam
  from msma_jax.render.render_face import render_face
  coeffs = fm.zero_coefficients((1,))
  camera = cam.Camera.for_face_model(fm, 64)
  out = render_face(fm, coeffs, camera, with_normals=True, antialias=False)
  covered = np.asarray(out.mask[0]) > 0.5
  assert covered.sum() > 50
  world = fm.mean_shape[None]
  pb = np.asarray(lighting.point_buf_normals(world, fm.triangles, fm.point_buf))[0]
  area = np.asarray(lighting.vertex_normals(world, fm.triangles))[0]
  from msma_jax.render.interpolate import interpolate
  def nmap(n):
    img = np.asarray(interpolate(jnp.asarray(n[None]), out.fragments, fm.triangles))[0]
    return img / np.maximum(np.linalg.norm(img, axis=-1, keepdims=True), 1e-12)
  got = np.asarray(out.normals[0])[covered]
  assert np.abs(got - nmap(pb)[covered]).max() < 1e-4
  assert np.abs(got - nmap(area)[covered]).max() > 1e-3


# ---- alignment ------------------------------------------------------------------------------------------

def standard_points_68() -> np.ndarray:
  """A face-like 68 x 3 set in BFM units (0.1 m): the embedded mean face's landmarks."""
  fm = load_face_model("embedded")
  return np.asarray(fm.landmarks_3d(fm.mean_shape), np.float64) / 100.0


def write_standard(folder: pathlib.Path) -> pathlib.Path:
  folder.mkdir(parents=True, exist_ok=True)
  scipy.io.savemat(str(folder / "similarity_Lm3D_all.mat"), {"lm": standard_points_68()})
  return folder / "similarity_Lm3D_all.mat"


def reference_align(img: np.ndarray, lm5_index_up: np.ndarray, lm3d5: np.ndarray):
  """Deep3DFaceRecon's align_img as its formulas read: POS by x and y rows solved apart (the
  system decouples), s = 102 / s_pos, a PIL bicubic resize of the whole photo and a crop.
  lm5_index_up: five points as pixel indices with y up (H - 1 - y). Returns (crop, lm_new [5, 2]
  in its crop frame (indices, y up), (w, h, left, up))."""
  h0, w0 = img.shape[:2]
  a = np.concatenate([lm3d5, np.ones((5, 1))], 1)
  r1 = np.linalg.lstsq(a, lm5_index_up[:, 0], rcond=None)[0]
  r2 = np.linalg.lstsq(a, lm5_index_up[:, 1], rcond=None)[0]
  s = 102.0 / ((np.linalg.norm(r1[:3]) + np.linalg.norm(r2[:3])) / 2)
  t = np.array([r1[3], r2[3]])
  w, h = int(w0 * s), int(h0 * s)
  left = int(w / 2 - 112 + (t[0] - w0 / 2) * s)
  up = int(h / 2 - 112 + (h0 / 2 - t[1]) * s)
  crop = Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC).crop(
      (left, up, left + 224, up + 224))
  lm = np.stack([lm5_index_up[:, 0] - t[0] + w0 / 2, lm5_index_up[:, 1] - t[1] + h0 / 2], 1) * s
  lm = lm - np.array([w / 2 - 112, h / 2 - 112])
  return np.asarray(crop), lm, (w, h, left, up)


def photo(h=300, w=260, seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1)
  return np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)


FACES = {  # five points (project pixels) of a 260 x 300 photo: big, small, near an edge, tilted
    "big": np.array([[95.0, 130], [170, 128], [133, 170], [105, 210], [162, 208]]),
    "small": np.array([[120.2, 140.7], [139.9, 141.1], [130.4, 152.0], [123.1, 160.3],
                       [137.6, 160.0]]),
    "edge": np.array([[10.0, 40], [70, 45], [38, 75], [18, 100], [62, 104]]),
    "tilted": np.array([[90.0, 140], [160, 115], [133, 160], [112, 200], [168, 178]]),
}


@pytest.mark.parametrize("face", list(FACES))
def test_crop_equals_the_transcription(tmp_path, face):
  img = photo()
  h0, w0 = img.shape[:2]
  p5 = FACES[face]
  std = load_standard_points(write_standard(tmp_path))
  index_up = np.stack([p5[:, 0] - 0.5, h0 - 1 - (p5[:, 1] - 0.5)], 1)
  ref_crop, ref_lm, (w, h, left, up) = reference_align(img, index_up, std)
  c = deep3d_crop(p5, (h0, w0), std)
  assert (c.w, c.h, c.left, c.up) == (w, h, left, up)
  t = Deep3DAligner(tmp_path).fit(p5, (h0, w0))
  crop = warp_to_crop(img, t)
  diff = np.abs(crop.astype(int) - ref_crop.astype(int))
  assert diff.max() <= 1 and (diff > 0).mean() < 0.002, (diff.max(), (diff > 0).mean())
  # The landmarks: the transform is the crop's. Deep3DFaceRecon's own crop-landmark formula
  # leaves out the int() of the window corner (< 1 px), the whole-pixel resize (w / W vs s) and
  # PIL's pixel-centre mapping (0.5 |1 - s|): within that bound of the crop's.
  ours = t.to_crop(p5)
  theirs = np.stack([ref_lm[:, 0] + 0.5, 224 - 1 - ref_lm[:, 1] + 0.5], 1)
  bound = 1.0 + 0.5 * abs(1 - c.s) + max(h0, w0) * np.abs(t.scales - c.s).max()
  assert np.abs(ours - theirs).max() < bound
  np.testing.assert_allclose(t.to_image(ours), p5, atol=1e-9)


def test_crop_content_sits_where_the_transform_says(tmp_path):
  """A dot drawn in the photo lands in the crop where to_crop maps its centre."""
  img = np.zeros((300, 260, 3), np.uint8)
  img[200:203, 120:123] = 255                                       # centre (121.5, 201.5)
  t = Deep3DAligner(write_standard(tmp_path)).fit(FACES["big"], img.shape[:2])
  crop = warp_to_crop(img, t).astype(float).sum(-1)
  yy, xx = np.mgrid[:224, :224]
  centre = np.array([(crop * (xx + 0.5)).sum(), (crop * (yy + 0.5)).sum()]) / crop.sum()
  np.testing.assert_allclose(centre, t.to_crop(np.array([121.5, 201.5])), atol=0.05)


def test_pos_recovers_a_projection():
  rng = np.random.default_rng(3)
  x = rng.normal(0, 1, (5, 3))
  r = np.array([[0.9, 0.1, 0.05], [-0.1, 0.95, 0.2]]) * 40
  t, s = pos(x @ r.T + [10.0, -4.0], x)
  np.testing.assert_allclose(t, [10.0, -4.0], atol=1e-9)
  assert s == pytest.approx((np.linalg.norm(r[0]) + np.linalg.norm(r[1])) / 2)


def test_standard_landmark_file_errors(tmp_path):
  with pytest.raises(Deep3DAlignError, match="not found"):
    Deep3DAligner(tmp_path)
  scipy.io.savemat(str(tmp_path / "similarity_Lm3D_all.mat"), {"x": np.zeros((68, 3))})
  with pytest.raises(Deep3DAlignError, match="no 'lm'"):
    Deep3DAligner(tmp_path)
  scipy.io.savemat(str(tmp_path / "similarity_Lm3D_all.mat"), {"lm": np.zeros((5, 3))})
  with pytest.raises(Deep3DAlignError, match="68 finite 3D points"):
    Deep3DAligner(tmp_path)
  (tmp_path / "similarity_Lm3D_all.mat").write_bytes(b"not a mat file")
  with pytest.raises(Deep3DAlignError, match="not a readable"):
    Deep3DAligner(tmp_path)
  aligner = Deep3DAligner(np.asarray(five_points(standard_points_68())))
  with pytest.raises(Deep3DAlignError, match="coincide"):
    aligner.fit(np.full((5, 2), 100.0), (300, 260))


# ---- weights from the command line ------------------------------------------------------------------

torch = pytest.importorskip("torch")


def write_net_recon(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """A random-weight net_recon (ResNet-50 + final 1x1 layers) in Deep3DFaceRecon's key layout."""
  from weight_fixtures import numpy_resnet_state
  state = {f"backbone.{k}": v for k, v in numpy_resnet_state((3, 4, 6, 3), True, seed=seed).items()}
  rng = np.random.default_rng(seed + 1)
  for i, n in enumerate((80, 64, 80, 3, 27, 2, 1)):
    state[f"final_layers.{i}.weight"] = rng.normal(0, 1e-3, (n, 2048, 1, 1)).astype(np.float32)
    state[f"final_layers.{i}.bias"] = rng.normal(0, 0.1, n).astype(np.float32)
  torch.save({"net_recon": {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}}, path)
  return path


@pytest.fixture(scope="module")
def bfm_folder(tmp_path_factory):
  """A BFM folder (BFM_model_front.mat, similarity_Lm3D_all.mat), an epoch_20.pth and a photo
  with a 68-point landmark file."""
  from cli_corpus import face_photo
  root = tmp_path_factory.mktemp("deep3d")
  write_standard(root / "BFM")
  scipy.io.savemat(str(root / "BFM" / "BFM_model_front.mat"),
                   bfm_front_dict(np.random.default_rng(5), n=12))
  write_net_recon(root / "epoch_20.pth")
  face_photo(root / "photos", "face")
  return root


def test_cli_weights_give_the_python_import(bfm_folder, tmp_path):
  import jax.numpy as jnp
  from configs.model import get_model_config
  from msma_jax.models import build_model
  from msma_jax.models.torch_weights import load_deep3d_checkpoint
  from data_pipelines.landmarks import read_landmark_file
  root = bfm_folder
  r = run_cli("reconstruct", root / "photos" / "face.png", "--out", tmp_path,
              "--weights", f"deep3d:{root / 'epoch_20.pth'}",
              "--face-model", root / "BFM" / "BFM_model_front.mat", "--save", "npz,pose",
              "--no-progress", timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  got = np.load(tmp_path / "face_face0.npz")
  info = json.loads((tmp_path / "face_face0.json").read_text())
  assert info["alignment"]["resample"] == "pil_bicubic"
  assert info["fit"]["init"].startswith("weights deep3d:")
  # The same by hand: the imported network on Deep3DFaceRecon's crop of the photo.
  fm = load_face_model(root / "BFM" / "BFM_model_front.mat")
  model = build_model(get_model_config("deep3d_r50"), fm)
  load_deep3d_checkpoint(model, root / "epoch_20.pth")
  model.eval()
  image = np.asarray(Image.open(root / "photos" / "face.png").convert("RGB"))
  lm = read_landmark_file(root / "photos" / "face.txt")[0]
  t = Deep3DAligner(root / "BFM").fit(lm, image.shape[:2])
  crop = warp_to_crop(image, t)
  want = model(jnp.asarray(crop[None], jnp.float32) / 255.0)
  for field in ("id", "exp", "tex", "angle", "gamma", "trans"):
    np.testing.assert_allclose(got[field].reshape(-1), np.asarray(getattr(want, field))[0],
                               rtol=1e-4, atol=1e-5, err_msg=field)
  assert np.abs(got["id"]).max() > 1e-3                      # not a zero network


def test_five_point_detections_frame_the_crop_as_deep3d(bfm_folder, tmp_path):
  """Deep3DFaceRecon's detections/*.txt (five points) beside a photo: the crop is align_img's of
  those five points (the 68 predicted from them only serve as landmarks)."""
  from cli_corpus import write_photo, write_points
  from msma_jax import Reconstructor
  root = bfm_folder
  photo_path = write_photo(tmp_path / "p.png", size=260)
  p5 = FACES["big"] - [0.0, 40.0]
  write_points(tmp_path / "p.txt", p5)
  rec = Reconstructor(face_model=root / "BFM" / "BFM_model_front.mat",
                      weights=f"deep3d:{root / 'epoch_20.pth'}")
  image = np.asarray(Image.open(photo_path).convert("RGB"))
  result = rec.reconstruct(photo_path)[0]     # dlib's shape predictor places 68 points in any box
  assert result.origin == "file5+detector"
  assert result.transform == Deep3DAligner(root / "BFM").fit(p5, image.shape[:2])


def test_cli_weight_mismatches_are_one_line(bfm_folder, tmp_path):
  root = bfm_folder
  photo_path = root / "photos" / "face.png"
  bfm = root / "BFM" / "BFM_model_front.mat"
  missing = tmp_path / "nope.pth"
  r = run_cli("reconstruct", photo_path, "--out", tmp_path / "o1", "--weights", f"deep3d:{missing}",
              "--face-model", bfm)
  assert_one_line(r.returncode, r.stderr, 2, str(missing), "not found")
  other = tmp_path / "other.pth"
  torch.save({"model": {"conv.weight": torch.zeros(3)}}, other)
  r = run_cli("reconstruct", photo_path, "--out", tmp_path / "o2", "--weights", f"deep3d:{other}",
              "--face-model", bfm)
  assert_one_line(r.returncode, r.stderr, 2, str(other), "backbone")
  r = run_cli("reconstruct", photo_path, "--out", tmp_path / "o3", "--weights",
              f"deep3d:{root / 'epoch_20.pth'}")                      # the embedded face model
  assert_one_line(r.returncode, r.stderr, 2, "epoch_20.pth", "80/64/80", "--face-model")
  r = run_cli("reconstruct", photo_path, "--out", tmp_path / "o4", "--weights", "torch:x.pth")
  assert_one_line(r.returncode, r.stderr, 2, "--weights", "KIND:PATH")
  r = run_cli("reconstruct", photo_path, "--out", tmp_path / "o5", "--align", "deep3d")
  assert_one_line(r.returncode, r.stderr, 2, "similarity_Lm3D_all.mat", "--standard-landmarks")
  r = run_cli("reconstruct", photo_path, "--out", tmp_path / "o6", "--align", "deep3d",
              "--standard-landmarks", tmp_path)
  assert_one_line(r.returncode, r.stderr, 2, str(tmp_path), "not found")


def test_deep3d_predictor_for_evaluate(bfm_folder):
  from msma_jax.evaluation.predictors import PredictorError, resolve_predictor
  from data_pipelines.landmarks import read_landmark_file
  root = bfm_folder
  fm = load_face_model(root / "BFM" / "BFM_model_front.mat")
  predictor = resolve_predictor(f"deep3d:{root / 'epoch_20.pth'}", fm)
  image = np.asarray(Image.open(root / "photos" / "face.png").convert("RGB"))[None]
  lm = read_landmark_file(root / "photos" / "face.txt")
  coeffs = predictor(image, lm)
  assert coeffs.id.shape == (1, 80) and np.all(np.isfinite(np.asarray(coeffs.to_flat())))
  with pytest.raises(PredictorError, match="BFM_model_front.mat"):
    resolve_predictor(f"deep3d:{root / 'epoch_20.pth'}", fm.replace(source=""))
