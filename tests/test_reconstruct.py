"""Reconstruction for users: Reconstructor, exports, landmarks in photo pixels, videos, bad input,
checkpoints and the evaluation predictor.

Two reconstructors are shared by the module: `fast` (landmark-only fitting from the mean face: no
rendering in the loop) and `fitting` (the full test-time fit at 224 px, compiled once for batches
of two faces).
"""
import json
import pathlib
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from data_fixtures import astronaut, write_video
from data_pipelines.alignment import AlignTransform
from data_pipelines.landmarks import flip_landmarks, read_landmark_file
from msma_jax import camera as cam
from msma_jax.inference.demo import random_coefficients
from msma_jax.inference.fit import projected_landmarks
from msma_jax.inference.framing import reframe
from msma_jax.inference.inputs import InputError
from msma_jax.inference.reconstruct import Reconstructor

ROOT = pathlib.Path(__file__).resolve().parents[1]


def grace_hopper() -> np.ndarray:
  """matplotlib's sample photo of Grace Hopper (600x512 RGB, one frontal face)."""
  import matplotlib

  from data_pipelines.images import read_image
  return read_image(pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")


def write_png(path, rgb):
  cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
  return path


def inter_ocular(lm):
  return float(np.linalg.norm(lm[36] - lm[45]))       # outer eye corners


@pytest.fixture(scope="module")
def fast():
  return Reconstructor(fit_steps=0, batch_size=4)


@pytest.fixture(scope="module")
def fitting():
  return Reconstructor(fit_steps=100, batch_size=1)


@pytest.fixture(scope="module")
def astronaut_result(fast):
  (face,) = fast.reconstruct(astronaut(), name="astronaut")
  return face


# ---- fitting ------------------------------------------------------------------------------------

def test_fitting_only_recovers_a_synthetic_face(fitting, embedded, tmp_path):
  """A face rendered at 224x224 from known coefficients (its landmark file beside the render, as a
  user would supply it) comes back within 2 px and 3 degrees. It is the harder face of
  tests/test_fit.py's pair (pitch 10 degrees off after the landmark warm-up alone)."""
  truth = random_coefficients(embedded, jax.random.key(3), 2, max_yaw_deg=30, max_pitch_deg=10,
                              max_roll_deg=8)
  truth = jax.tree.map(lambda a: np.asarray(a[1]), truth)
  image, mask, _ = fitting.views.render_crop(truth, 224)     # the program overlays use, too
  image = image * mask[..., None] + 0.5 * (1 - mask[..., None])
  camera = cam.Camera.for_face_model(embedded, 224)
  # the jaw points where an annotator puts them: on the silhouette (reconstruct fits them there)
  landmarks = np.asarray(projected_landmarks(embedded, jax.tree.map(lambda a: a[None], truth),
                                             camera, contour=True))[0]
  path = write_png(tmp_path / "synthetic.png", np.round(image * 255).astype(np.uint8))
  np.savetxt(path.with_suffix(".txt"), landmarks - 0.5)         # 0-based pixel indices
  (face,) = fitting.reconstruct(path)
  assert face.origin == "file"
  err = np.linalg.norm(face.landmarks - landmarks, axis=-1)
  assert err.mean() < 2.0, err.mean()
  # The fit lives in the aligned crop; move it to the render's own framing to compare poses.
  in_image = reframe(embedded, face.coefficients, face.transform)
  pose_err = np.abs(np.degrees(np.asarray(in_image.angle) - truth.angle))
  assert pose_err.max() < 3.0, pose_err
  print(f"synthetic face: landmarks {err.mean():.2f} px, pose errors {np.round(pose_err, 2)} deg")


def test_real_photos_landmarks_within_5_percent_of_inter_ocular_distance(fitting):
  """After fitting, the model's projected landmarks lie near dlib's (the fit's own targets) on the
  photos that ship with scikit-image and matplotlib."""
  steps = fitting.fit_steps
  fitting.fit_steps = 30
  try:
    faces = [fitting.reconstruct(p)[0] for p in (astronaut(), grace_hopper())]   # batches of 1
  finally:
    fitting.fit_steps = steps
  errors = [np.linalg.norm(f.landmarks - f.input_landmarks, axis=-1).mean()
            / inter_ocular(f.input_landmarks) for f in faces]
  print(f"photos: landmark error {np.round(100 * np.array(errors), 1)} % of the inter-ocular distance")
  assert max(errors) < 0.05, errors


def test_reframe_moves_faces_with_the_crop(embedded):
  coeffs = jax.tree.map(np.asarray, random_coefficients(embedded, jax.random.key(0), 4))
  camera = cam.Camera.for_face_model(embedded, 224)
  lm_a = np.asarray(projected_landmarks(embedded, coeffs, camera))
  for scale, shift in [(1.05, (10.0, -10.0)), (0.95, (-10.0, 5.0))]:
    t = AlignTransform(scale, shift, 224)
    lm_b = np.asarray(projected_landmarks(embedded, reframe(embedded, coeffs, t), camera))
    err = np.linalg.norm(lm_b - t.to_image(lm_a), axis=-1)
    assert err.mean() < 0.1 and err.max() < 0.5, (err.mean(), err.max())


# ---- exports and landmarks in photo pixels ------------------------------------------------------

def test_exports_reload(astronaut_result, embedded, tmp_path):
  face = astronaut_result
  paths = face.save(tmp_path, "astro", "all", texture_size=256)
  assert set(paths) == {"obj", "ply", "npz", "mat", "landmarks", "pose", "overlay", "depth",
                        "texture"}
  assert paths["obj"].name == "astro_face0.obj"
  for key in ("obj", "ply"):
    mesh = trimesh.load(paths[key], process=False)
    assert mesh.vertices.shape == (embedded.n_vertices, 3)
    assert mesh.faces.shape == (embedded.n_triangles, 3)
    np.testing.assert_allclose(mesh.vertices, face.vertices, atol=1e-4)
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    np.testing.assert_allclose(colours, face.colours, atol=0.5 / 255 + 1e-6)
  from msma_jax.inference import load_coefficients
  for key in ("npz", "mat"):
    back = load_coefficients(paths[key])
    np.testing.assert_allclose(np.asarray(back.to_flat()).reshape(-1),
                               np.asarray(face.coefficients.to_flat()), atol=1e-6)
  import scipy.io
  mat = scipy.io.loadmat(str(paths["mat"]))
  assert {"id", "exp", "tex", "angle", "gamma", "trans", "lm68"} <= set(mat)
  np.testing.assert_allclose(mat["lm68"], face.landmarks - 0.5, atol=1e-3)
  # The .txt is in the landmark-file convention msma-jax reads back (0-based pixel indices).
  np.testing.assert_allclose(read_landmark_file(paths["landmarks"])[0], face.landmarks, atol=1e-3)
  info = json.loads(paths["pose"].read_text())
  np.testing.assert_allclose([info["pose_deg"][k] for k in ("yaw", "pitch", "roll")], face.pose,
                             atol=1e-9)
  assert info["files"]["overlay"] == "astro_face0_overlay.png"
  photo = astronaut()
  overlay = cv2.imread(str(paths["overlay"]))[..., ::-1]
  assert overlay.shape == photo.shape
  changed = np.any(overlay != photo, axis=-1)
  ys, xs = np.nonzero(changed)
  box = face.input_landmarks
  # The render covers the face (it also covers the forehead above the brows) and nothing far away.
  assert changed[int(box[30, 1]), int(box[30, 0])]                     # nose tip
  assert xs.min() > box[:, 0].min() - 20 and xs.max() < box[:, 0].max() + 20
  assert ys.max() < box[:, 1].max() + 20
  depth = cv2.imread(str(paths["depth"]), cv2.IMREAD_UNCHANGED)
  assert depth.dtype == np.uint16 and depth.shape == photo.shape[:2]
  drawn = depth > 0                                                      # where the face is drawn
  assert (drawn & changed).sum() / (drawn | changed).sum() > 0.9         # (edges antialiased)
  mm = depth[depth > 0] / 10.0
  assert 900 < mm.min() < mm.max() < 1100                                # the face is ~1 m away
  assert mm.max() - mm.min() > 50                                        # nose to cheeks
  texture = cv2.imread(str(paths["texture"]), cv2.IMREAD_UNCHANGED)
  assert texture.shape == (256, 256, 4)
  seen = texture[..., 3] > 0
  assert 0.2 < seen.mean() < 0.9
  assert texture[..., :3][seen].mean() > 60                              # photo colours, not black
  from msma_jax.inference.sheet import write_sheet
  sheet = cv2.imread(str(write_sheet([face, face], tmp_path / "sheet.png", tile=224)))
  assert sheet.shape == (2 * 224 + 4, 6 * 224, 3)


def test_landmarks_map_back_through_crop_and_rescale(fast, astronaut_result):
  """A cropped and enlarged copy of the photo gives the same landmarks once mapped back."""
  photo = astronaut()
  x0, y0, k = 90, 30, 1.6
  crop = photo[y0:y0 + 260, x0:x0 + 300]
  big = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
  (face,) = fast.reconstruct(big, name="astronaut crop x1.6")
  assert face.image_size == big.shape[:2]
  back = face.landmarks / k + np.array([x0, y0])
  err = np.linalg.norm(back - astronaut_result.landmarks, axis=-1)
  iod = inter_ocular(astronaut_result.input_landmarks)
  assert err.mean() < 0.02 * iod, (err.mean(), iod)
  # and they sit on the detected face of the original photo
  assert np.linalg.norm(back - astronaut_result.input_landmarks, axis=-1).mean() < 0.05 * iod


def test_landmark_files_and_bad_input_lines(fast, tmp_path):
  photo = astronaut()
  good = write_png(tmp_path / "good.png", photo)
  (from_photo,) = fast.reconstruct(good)
  assert from_photo.origin == "detector"
  np.savetxt(tmp_path / "good.txt", from_photo.input_landmarks - 0.5)
  (from_file,) = fast.reconstruct(good)
  assert from_file.origin == "file"
  np.testing.assert_allclose(from_file.landmarks, from_photo.landmarks, atol=1e-3)
  (tmp_path / "empty.jpg").write_bytes(b"")
  cat = write_png(tmp_path / "cat.png", __import__("skimage").data.chelsea())
  with pytest.raises(InputError, match=r"empty.jpg: empty file") as e:
    fast.reconstruct(tmp_path / "empty.jpg")
  assert e.value.reason == "unreadable"
  with pytest.raises(InputError, match=r"cat.png: no face found") as e:
    fast.reconstruct(cat)
  assert e.value.reason == "no_face"
  # the batch form reports them and goes on
  out = list(fast.reconstruct_many([tmp_path / "empty.jpg", good, cat]))
  assert [type(r).__name__ for _, r in out] == ["InputError", "list", "InputError"]


def test_unavailable_device_is_one_line():
  try:
    jax.devices("gpu")
    pytest.skip("this machine has a GPU")
  except RuntimeError:
    pass
  with pytest.raises(ValueError, match=r"--device gpu: no GPU is available to JAX"):
    Reconstructor(device="gpu")
  assert Reconstructor(device="cpu", fit_steps=0).device.platform == "cpu"


# ---- videos and the command line ----------------------------------------------------------------

def test_video_gives_one_result_per_sampled_frame(fast, tmp_path):
  from msma_jax.inference.batch import run_reconstruct
  head = astronaut()[:256, 96:352]
  frames = [cv2.warpAffine(head, np.float32([[1, 0, 4 * i], [0, 1, 0]]), (256, 256))
            for i in range(7)]
  video = write_video(tmp_path / "clip.avi", frames)
  summary = run_reconstruct([video], tmp_path / "out", reconstructor=fast, every=3,
                            outputs="landmarks,pose", progress=False)
  assert summary.pictures == 3 and summary.faces == 3 and summary.num_failed == 0
  names = sorted(p.name for p in (tmp_path / "out").glob("*_lm68.txt"))
  assert names == [f"clip_frame{i:06d}_face0_lm68.txt" for i in (0, 3, 6)]
  lm = [read_landmark_file(tmp_path / "out" / n)[0] for n in names]
  shift = [float(np.mean(l[:, 0] - lm[0][:, 0])) for l in lm]
  np.testing.assert_allclose(shift, [0.0, 12.0, 24.0], atol=2.0)        # the head moved 4 px/frame


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "msma_jax.cli", *map(str, args)],
                        capture_output=True, text=True, timeout=600)


def test_cli_bad_inputs_one_line_each_and_exit_status(tmp_path, capsys):
  from msma_jax.cli import main
  src = tmp_path / "in"
  (src / "sub").mkdir(parents=True)
  write_png(src / "astronaut.png", astronaut()[:300, 80:380])
  (src / "truncated.jpg").write_bytes(cv2.imencode(".jpg", astronaut())[1].tobytes()[:2000])
  (src / "notes.png").write_text("not an image")
  write_png(src / "sub" / "cat.png", __import__("skimage").data.chelsea())
  (src / "broken.avi").write_bytes(b"RIFF....AVI garbage" * 20)
  common = ["--fit-steps", "0", "--batch-size", "4", "--no-progress"]
  status = main(["reconstruct", str(src), str(tmp_path / "missing.jpg"), "--out",
                 str(tmp_path / "out"), "--save", "npz,pose", *common])
  out, err = capsys.readouterr()
  assert status == 1, err[-3000:]
  lines = [l for l in err.splitlines() if l.startswith("skipped: ")]
  assert len(lines) == 5, err[-3000:]
  for needle in ("truncated.jpg: ", "notes.png: ", "cat.png: no face found", "broken.avi: cannot "
                 "open video", "missing.jpg: no such file"):
    assert sum(needle in l for l in lines) == 1, (needle, lines)
  summary = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert summary["pictures"] == 6 and summary["pictures_done"] == 1 and summary["faces"] == 1
  assert summary["failed"] == {"missing": 1, "unreadable": 2, "video": 1, "no_face": 1}
  assert (tmp_path / "out" / "astronaut_face0.npz").is_file()
  assert "pictures: 6, reconstructed: 1" in out
  # all good -> 0
  status = main(["reconstruct", str(src / "astronaut.png"), "--out", str(tmp_path / "out2"),
                 "--save", "pose", *common])
  assert status == 0, capsys.readouterr().err[-3000:]
  info = json.loads((tmp_path / "out2" / "astronaut_face0.json").read_text())
  assert abs(info["pose_deg"]["yaw"]) < 20


# ---- checkpoints --------------------------------------------------------------------------------

def save_checkpoint(workdir: pathlib.Path, sizes=None, face_model="embedded", image_size=32):
  """An untrained quickstart-r18 encoder saved the way training saves it (Checkpointer)."""
  import grain
  from flax import nnx

  from configs.quickstart import get_config
  from msma_jax.face_model import CoefficientSizes, load_face_model
  from msma_jax.models import build_model
  from msma_jax.train.checkpoint import Checkpointer
  from msma_jax.train.optim import make_optimizer
  config = get_config("r18")
  config.image_size = image_size
  config.model.fusion.width = 16
  config.face_model = face_model
  config.checkpoint.best_metric = ""
  sizes = sizes or load_face_model("embedded").sizes
  model = build_model(config.model, CoefficientSizes(*sizes), seed=1)
  tx, _ = make_optimizer(config.optim, 1, 1)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
  meta = {"config": config.to_dict(), "process_count": 1, "face_model": face_model,
          "image_size": image_size, "coefficient_sizes": list(sizes)}
  ckpt = Checkpointer(workdir / "checkpoints", config.checkpoint)
  ckpt.save(1, nnx.state((model, optimizer)), iterator, meta, force=True)
  ckpt.wait()
  ckpt.close()
  return workdir


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return save_checkpoint(tmp_path_factory.mktemp("run"))


def test_checkpoint_encoder_and_predictor(checkpoint, embedded):
  from msma_jax.evaluation.predictors import resolve_predictor
  from msma_jax.train.checkpoint import load_model
  rec = Reconstructor(checkpoint)
  assert rec.fit_steps == 0 and rec.landmark_steps == 0 and rec.model_size == 32
  (face,) = rec.reconstruct(astronaut())
  # the coefficients are the checkpoint's encoder's output on the 32 px aligned crop; a path
  # relative to the working directory works too (Orbax itself wants absolute ones)
  with pytest.MonkeyPatch.context() as mp:
    mp.chdir(checkpoint.parent)
    model, meta = load_model(checkpoint.name)
  assert meta["image_size"] == 32
  from data_pipelines.alignment import warp_to_crop
  from msma_jax.inference.views import scaled
  small = warp_to_crop(astronaut(), scaled(face.transform, 32 / 224)).astype(np.float32) / 255
  direct = model(jnp.asarray(small)[None])
  np.testing.assert_allclose(np.asarray(face.coefficients.to_flat()),
                             np.asarray(direct.to_flat())[0], atol=1e-4)
  # the evaluation predictor `checkpoint:PATH` runs the same encoder
  predictor = resolve_predictor(f"checkpoint:{checkpoint}", embedded)
  crops = np.stack([face.crop, face.crop[:, ::-1]]).astype(np.float32) / 255
  lm = face.transform.to_crop(face.input_landmarks)
  lms = np.stack([lm, flip_landmarks(lm, 224)])
  pred = predictor(crops, lms)
  assert pred.batch_shape == (2,) and np.all(np.isfinite(np.asarray(pred.to_flat())))
  pred0 = rec.predict_crops(crops[:1], lms[:1], realign=False)
  np.testing.assert_allclose(np.asarray(pred0.to_flat()), np.asarray(direct.to_flat()), atol=1e-4)


def test_checkpoint_of_another_face_model_is_one_line(checkpoint, tmp_path):
  from msma_jax.face_model import CoefficientSizes
  from msma_jax.train.checkpoint import CheckpointLoadError
  other = save_checkpoint(tmp_path / "bfm_run", sizes=CoefficientSizes(80, 64, 80),
                          face_model="BFM_model_front.mat")
  with pytest.raises(CheckpointLoadError, match="trained for face model 'BFM_model_front.mat'"):
    Reconstructor(other)
  src = write_png(tmp_path / "astronaut.png", astronaut()[:300, 80:380])
  p = _cli("reconstruct", src, "--out", tmp_path / "out", "--checkpoint", other, "--no-progress")
  assert p.returncode == 2
  err = [l for l in p.stderr.splitlines() if l.strip() and "Warning" not in l
         and "pkg_resources" not in l]
  assert len(err) == 1 and err[0].startswith("msma-jax reconstruct: error: ") and str(other) in err[0]
