"""TFDS ArrayRecord builders without TensorFlow, `msma-jax prepare-data`, raw 300W-LP/AFLW2000-3D."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from data_fixtures import astronaut_landmarks, head, write_bad_input_folder
from PIL import Image

from data_pipelines import sources

# Runs first in the subprocess: the path finder is replaced by one that never finds `tensorflow`,
# so TensorFlow looks exactly as if it were not installed (whether or not it is); the check proves it.
_NO_TF = """
import importlib.machinery, importlib.util, sys
class _PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
      return None
    return super().find_spec(name, path, target)
sys.meta_path = [_PathFinderWithoutTensorFlow if f is importlib.machinery.PathFinder else f
                 for f in sys.meta_path]
assert importlib.util.find_spec("tensorflow") is None
try:
  import tensorflow
  raise SystemExit("tensorflow is importable")
except ModuleNotFoundError:
  pass
"""

def _run_without_tf(code: str, *args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", _NO_TF + code, *args], capture_output=True,
                        text=True, timeout=600, cwd=pathlib.Path(__file__).parent.parent)


def test_prepare_data_cli_without_tensorflow(tmp_path):
  """The image-folder builder runs with TensorFlow unimportable; bad photos are skipped and counted,
  the good ones become records, the contact sheet is written."""
  expected = write_bad_input_folder(tmp_path / "photos")
  code = ("from msma_jax.cli import main\n"
          "rc = main(sys.argv[1:])\n"
          "assert 'tensorflow' not in sys.modules\n"
          "sys.exit(rc)\n")
  r = _run_without_tf(code, "prepare-data", str(tmp_path / "photos"), "--out", str(tmp_path / "data"),
                      "--contact-sheet", str(tmp_path / "sheet.png"), "--no-progress")
  good = sorted(k for k, v in expected.items() if v is None)
  bad = {k: v for k, v in expected.items() if v is not None}
  # Skipped photos make the exit status 1 (more than --max-failures 0), in one line.
  assert r.returncode == 1, r.stderr[-3000:]
  assert r.stderr.strip() == (f"msma-jax prepare-data: {len(bad)} of {len(expected)} photos "
                              "skipped (more than --max-failures 0)")
  assert f"images read: {len(expected)}, faces found: {len(good)}, images skipped: {len(bad)}" \
      in r.stdout
  assert "skipped, unreadable image (empty, truncated, corrupt or not an image): 4" in r.stdout
  for line in ("too small: 1", "no face found: 1", "bad landmark file: 1"):
    assert line in r.stdout, r.stdout
  for name in bad:
    assert f"skipped: {tmp_path / 'photos' / name}" in r.stdout or name == "badlm.png"
  assert "badlm.txt: has 30 points" in r.stdout
  summary = json.loads((tmp_path / "data/msma_face_images/1.0.0/prepare_summary.json").read_text())
  assert summary["skipped"] == {"unreadable": 4, "too_small": 1, "no_face": 1, "bad_landmarks": 1,
                                "bad_alignment": 0}
  from data_pipelines.tfds_builders import load_prepared
  src = load_prepared(tmp_path / "data/msma_face_images")
  records = [src[i] for i in range(len(src))]
  assert sorted(r["key"].decode() for r in records) == good
  want = astronaut_landmarks() - [100, 0]
  for rec in records:
    assert rec["origin"] == b"detector" and rec["face_index"] == 0
    np.testing.assert_array_equal(rec["image_size"], [260, 260])
    err = np.linalg.norm(rec["source_landmarks"] - want, axis=-1)
    assert np.median(err) < 3.0, rec["key"]
    s, tx, ty = rec["align"]
    np.testing.assert_allclose(rec["landmarks"], rec["source_landmarks"] * s + [tx, ty], atol=1e-3)
    assert rec["image"][:2] == b"\xff\xd8" and rec["skin_mask"].shape == (224, 224)
  sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
  assert sheet.shape == (2 * (160 + 4) + 4 + 160 + 4, 4 * (320 + 4) + 4, 3)   # 9 tiles: 3 rows x 4
  assert sheet[4:164, 4:164].std() > 20                   # a real crop, not blank


def _write_3ddfa(root: pathlib.Path, name: str, key: str, lm: np.ndarray, pose, rng) -> None:
  root.mkdir(parents=True, exist_ok=True)
  Image.fromarray(head()).save(root / f"{name}.jpg", quality=95)
  pts = lm.T + 0.5                                          # MATLAB 1-based
  if key == "pt3d_68":
    pts = np.concatenate([pts, rng.normal(size=(1, 68))])
  m = {key: pts, "Pose_Para": np.array([list(pose) + [0.1, 0.2, 0.3, 0.001]]),
       "Shape_Para": rng.normal(size=(199, 1)), "Exp_Para": rng.normal(size=(29, 1)),
       "Illum_Para": rng.normal(size=(1, 10)), "Color_Para": rng.normal(size=(1, 7)),
       "Tex_Para": rng.normal(size=(199, 1)), "roi": np.array([[1, 1, 260, 260]])}
  if key == "pt3d_68":
    m["pt2d"] = np.full((2, 21), -1.0)                     # AFLW's 21 points
  scipy.io.savemat(root / f"{name}.mat", m)


def test_raw_300w_lp_and_aflw2000_layouts(tmp_path, rng):
  lm = astronaut_landmarks() - [100, 0]
  _write_3ddfa(tmp_path / "300W_LP/AFW", "AFW_134212_1_0", "pt2d", lm, (0.1, -0.5, 0.05), rng)
  _write_3ddfa(tmp_path / "300W_LP/HELEN_Flip", "HELEN_1_0", "pt2d", lm + 3, (0.0, 0.2, 0.0), rng)
  (tmp_path / "300W_LP/landmarks/AFW").mkdir(parents=True)
  Image.fromarray(head()).save(tmp_path / "300W_LP/landmarks/AFW/x.jpg")   # not a sample
  scipy.io.savemat(tmp_path / "300W_LP/landmarks/AFW/x.mat", {"pts_2d": lm})
  (tmp_path / "300W_LP/AFW/broken.jpg").write_bytes(b"")
  (tmp_path / "300W_LP/AFW/broken.mat").write_text("not a mat file")
  items = list(sources.w300_lp(tmp_path / "300W_LP"))
  assert [i.key for i in items] == ["AFW/AFW_134212_1_0.jpg", "AFW/broken.jpg", "HELEN_Flip/HELEN_1_0.jpg"]
  a = items[0]
  np.testing.assert_allclose(a.landmarks[0], lm, atol=1e-5)
  np.testing.assert_allclose(a.pose_deg, np.degrees([-0.5, 0.1, 0.05]), rtol=1e-6)  # yaw, pitch, roll
  assert a.params["Shape_Para"].shape == (199,) and a.params["Exp_Para"].shape == (29,)
  assert a.params["Pose_Para"].shape == (7,)
  assert items[1].error and "broken.mat: not a readable MATLAB .mat file" in items[1].error

  _write_3ddfa(tmp_path / "AFLW2000", "image00002", "pt3d_68", lm, (0.3, 0.9, -0.2), rng)
  _write_3ddfa(tmp_path / "AFLW2000", "image00004", "pt3d_68", lm, (0.0, 0.0, 0.0), rng)
  scipy.io.savemat(tmp_path / "AFLW2000/image00004.mat", {"pt2d": np.zeros((2, 21))})
  items = list(sources.aflw2000_3d(tmp_path / "AFLW2000"))
  np.testing.assert_allclose(items[0].landmarks[0], lm, atol=1e-5)
  np.testing.assert_allclose(items[0].pose_deg, np.degrees([0.9, 0.3, -0.2]), rtol=1e-6)
  assert "image00004.mat: lacks keys ['pt3d_68', 'Pose_Para']" in items[1].error

  # built into msma_face_images with the annotation's landmarks (no detection) and the pose
  from data_pipelines.tfds_builders import MsmaFaceImages, build, load_prepared
  b = MsmaFaceImages(source_dir=tmp_path / "300W_LP", layout="300w_lp", data_dir=tmp_path / "d",
                     progress=False, num_workers=2)           # through the worker-process path
  src = load_prepared(build(b))
  assert b.summary.to_dict()["skipped"]["bad_landmarks"] == 1 and len(src) == 2
  recs = {src[i]["key"].decode(): src[i] for i in range(2)}
  r = recs["AFW/AFW_134212_1_0.jpg"]
  assert r["origin"] == b"annotation" and np.isnan(r["score"])
  np.testing.assert_allclose(r["source_landmarks"], lm, atol=1e-4)
  np.testing.assert_allclose(r["pose_deg"], np.degrees([-0.5, 0.1, 0.05]), rtol=1e-5)
  np.testing.assert_allclose(recs["HELEN_Flip/HELEN_1_0.jpg"]["source_landmarks"], lm + 3, atol=1e-4)
  with pytest.raises(sources.SourceError, match="unknown source layout"):
    sources.open_source(tmp_path, "celeba")


def test_image_folder_listing(tmp_path):
  for name in ["b/x.JPG", "a.png", "c.webp", "d.bmp", "e.jpeg", "f.gif", ".hidden/g.jpg", "h.txt"]:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"x")
  assert [i.key for i in sources.image_folder(tmp_path)] == ["a.png", "b/x.JPG", "c.webp", "d.bmp",
                                                             "e.jpeg"]
  with pytest.raises(sources.SourceError, match="nope: not a folder"):
    list(sources.image_folder(tmp_path / "nope"))


def test_prepare_data_with_no_usable_faces_fails_cleanly(tmp_path, capsys):
  from msma_jax.cli import main
  (tmp_path / "photos").mkdir()
  (tmp_path / "photos" / "a.jpg").write_bytes(b"")
  Image.fromarray(head()).resize((20, 20)).save(tmp_path / "photos" / "b.png")
  rc = main(["prepare-data", str(tmp_path / "photos"), "--out", str(tmp_path / "d"), "--no-progress"])
  out, err = capsys.readouterr()
  assert rc == 2
  assert "images read: 2, faces found: 0, images skipped: 2" in out
  assert "photos: no usable faces (2 images read, 2 skipped); nothing written" in err
  assert not list((tmp_path / "d").glob("msma_face_images/*/dataset_info.json"))
  assert main(["prepare-data", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 2
  assert "missing: source folder not found" in capsys.readouterr().err


def test_resolve_dataset_dir_layouts(tmp_path):
  """A prepared dataset is found from its version folder, its dataset folder (newest version) or
  the TFDS data dir above; a data dir with two datasets and an empty folder are named in errors."""
  from data_pipelines.tfds_builders import DatasetError, resolve_dataset_dir
  for version in ("1.0.0", "1.10.0", "1.9.0"):
    d = tmp_path / "data" / "msma_synthetic_faces" / version
    d.mkdir(parents=True)
    (d / "dataset_info.json").write_text("{}")
  newest = tmp_path / "data" / "msma_synthetic_faces" / "1.10.0"
  assert resolve_dataset_dir(newest) == newest
  assert resolve_dataset_dir(newest.parent) == newest
  assert resolve_dataset_dir(tmp_path / "data") == newest
  other = tmp_path / "data" / "msma_face_images" / "1.0.0"
  other.mkdir(parents=True)
  (other / "dataset_info.json").write_text("{}")
  with pytest.raises(DatasetError, match=r"data: holds several datasets \(msma_face_images, "
                                         r"msma_synthetic_faces\)"):
    resolve_dataset_dir(tmp_path / "data")
  (tmp_path / "empty").mkdir()
  with pytest.raises(DatasetError, match="empty: no prepared dataset here"):
    resolve_dataset_dir(tmp_path / "empty")
