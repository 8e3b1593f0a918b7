"""Video with identities (`msma_jax.inference.tracking`, `msma_jax.inference.video`).

The test videos are rendered: two synthetic people with known, different identities side by side
(each in its own 112 px half of a 112x224 frame), turning and drifting smoothly over 10 frames.
Their known landmarks are fed to the tracker and fitter (dlib finds only one of the two rendered
faces reliably; one test goes through real detection with one person). Fitting is the landmark
stage only, at 64 px (the landmark weight scaled to that size, like configs/quickstart.py), so the
module runs in well under a minute; the identity then is seen through the landmarks alone, so the
two people differ along the identity direction that a change of scale, pose or expression cannot
imitate (`observable_direction`).
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from data_fixtures import write_video
from data_pipelines import photo_like
from data_pipelines.alignment import AlignTransform
from data_pipelines.landmarks import read_landmark_file
from msma_jax import camera as cam
from msma_jax.face_model import Coefficients
from msma_jax.inference import video as video_lib
from msma_jax.inference.demo import random_coefficients
from msma_jax.inference.fit import projected_landmarks
from msma_jax.inference.reconstruct import Reconstructor
from msma_jax.inference.tracking import (FaceTracker, appearance_descriptor, box_iou,
                                         smooth_sequence)
from msma_jax.inference.video import identity_frames, reconstruct_video, run_video_tracks

TILE = 112          # px: each person's half of the frame
FRAMES = 10
FIT_SIZE = 64


# ---- synthetic people ---------------------------------------------------------------------------

def observable_direction(fm) -> np.ndarray:
  """[n_id] unit identity direction whose 2D landmark change is largest once what a 2D
  similarity (scale, shift, roll) and the expressions can produce is projected out."""
  idx = np.asarray(fm.landmark_indices)
  basis = np.asarray(fm.id_basis)[idx][:, :2].reshape(-1, fm.sizes.id)
  mean = np.asarray(fm.mean_shape)[idx][:, :2]
  mean = mean - mean.mean(0)
  similar = np.stack([np.tile([1.0, 0.0], 68), np.tile([0.0, 1.0], 68), mean.reshape(-1),
                      np.stack([-mean[:, 1], mean[:, 0]], -1).reshape(-1)], -1)
  q, _ = np.linalg.qr(np.concatenate(
      [similar, np.asarray(fm.exp_basis)[idx][:, :2].reshape(-1, fm.sizes.exp)], 1))
  _, _, vt = np.linalg.svd(basis - q @ (q.T @ basis), full_matrices=False)
  return vt[0] * np.sign(vt[0][np.argmax(np.abs(vt[0]))])


def person(fm, sign: float, frames: int = FRAMES) -> Coefficients:
  """[frames] coefficients of one person: identity 3·sign along `observable_direction`, albedo
  apart by sign, yaw sweeping 2.5 deg/frame (toward the other person), drifting 1.5 mm/frame,
  a smile coming and going."""
  s = fm.sizes
  t = np.arange(frames, dtype=np.float32)
  tex = np.zeros(s.tex, np.float32)
  tex[:2] = sign * np.array([1.5, -1.0])
  exp = np.zeros((frames, s.exp), np.float32)
  exp[:, 0] = 0.2 * (1 + np.sin(t / 2))
  gamma = np.zeros((frames, 27), np.float32)
  gamma[:, 0], gamma[:, 1:4] = 0.1, 0.1
  angle = np.stack([np.full_like(t, np.radians(4.0)), np.radians(sign * (-12.0 + 2.5 * t)),
                    np.radians(2.0 * np.sin(t / 3))], -1)
  return Coefficients(
      id=np.tile((3.0 * sign * observable_direction(fm)).astype(np.float32), (frames, 1)),
      exp=exp, tex=np.tile(tex, (frames, 1)), angle=angle.astype(np.float32), gamma=gamma,
      trans=np.stack([1.5 * t - 7, 0 * t, 0 * t], -1).astype(np.float32))


def render_person(views, fm, coeffs: Coefficients, size: int = TILE, head: bool = False):
  """Per frame (image [S, S, 3] float, coverage [S, S]) and landmarks [frames, 68, 2] tile px
  (jaw on the silhouette, as reconstruct fits it). head: hair, neck and shoulders drawn behind
  the face on a grey tile (`photo_like.draw_head`; then dlib finds the face in every frame)."""
  camera = cam.Camera.for_face_model(fm, size)
  landmarks = np.asarray(projected_landmarks(fm, coeffs, camera, contour=True))
  tiles = []
  for t in range(coeffs.id.shape[0]):
    image, mask, _ = views.render_crop(jax.tree.map(lambda a: a[t], coeffs), size)
    if head:
      back = photo_like.draw_head(np.full((size, size, 3), 0.45, np.float32), landmarks[t],
                                  photo_like.skin_colour(image, mask), np.random.default_rng(0))
      image, mask = image * mask[..., None] + back * (1 - mask[..., None]), np.ones_like(mask)
    tiles.append((image, mask))
  return tiles, landmarks


def compose(people, offsets, present, width: int = 2 * TILE, background: float = 0.45):
  """Frames uint8 [TILE, width, 3] and per frame landmarks [N, 68, 2] of the people present:
  people [(tiles, landmarks)], offsets[t][p] the x of person p's tile in frame t (may reach past
  the frame's edges: the face is cut there), present[t][p]."""
  frames, landmarks = [], []
  for t in range(len(present)):
    picture = np.full((TILE, width, 3), background, np.float32)
    faces = []
    for p, (tiles, lms) in enumerate(people):
      if not present[t][p]:
        continue
      x0 = offsets[t][p]
      image, mask = tiles[t]
      a, b = max(0, x0), min(width, x0 + TILE)
      m = mask[:, a - x0:b - x0, None]
      picture[:, a:b] = image[:, a - x0:b - x0] * m + picture[:, a:b] * (1 - m)
      faces.append(lms[t] + [x0, 0])
    frames.append(np.round(picture * 255).astype(np.uint8))
    landmarks.append(np.asarray(faces, np.float64).reshape(-1, 68, 2))
  return frames, landmarks


def identity_shape(fm, idv) -> np.ndarray:
  return np.asarray(fm.mean_shape + jnp.einsum("k,vck->vc", jnp.asarray(idv), fm.id_basis))


@pytest.fixture(scope="module")
def rec():
  # the landmark weight is scaled to the fit size by Reconstructor itself
  return Reconstructor(fit_size=FIT_SIZE, fit_steps=0, landmark_steps=300, batch_size=8)


@pytest.fixture(scope="module")
def people(rec):
  truths = [person(rec.face_model, s) for s in (1.0, -1.0)]
  return truths, [render_person(rec.views, rec.face_model, c) for c in truths]


def side_by_side(people, present=None):
  truths, rendered = people
  present = present or [[True, True]] * FRAMES
  return compose(rendered, [[0, TILE]] * FRAMES, present)


def read_summary(folder):
  return json.loads((folder / "summary.json").read_text())


# ---- pure functions -----------------------------------------------------------------------------

def test_smoothing_keeps_constant_velocity_and_averages_noise():
  steps = np.array([0, 1, 2, 3, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17])    # gaps of 1 and 2
  line = np.stack([2.0 + 0.7 * steps, -1.0 * steps], -1)
  np.testing.assert_allclose(smooth_sequence(steps, line, 1.5), line, atol=1e-9)
  np.testing.assert_array_equal(smooth_sequence(steps, line, 0.0), line)
  np.testing.assert_array_equal(smooth_sequence([4], [[3.0]], 1.5), [[3.0]])   # alone: kept
  noise = np.random.default_rng(0).normal(size=(400, 3))
  ratio = smooth_sequence(np.arange(400), noise, 1.5)[10:-10].std() / noise.std()
  assert 0.4 < ratio < 0.6, ratio               # ~5 frames averaged by the default strength
  with pytest.raises(ValueError, match="strictly increasing"):
    smooth_sequence([0, 2, 2], np.zeros((3, 1)))


def test_tracker_assignment_gaps_appearance_and_border():
  a = np.array([10.0, 10.0, 50.0, 60.0])
  b = np.array([120.0, 10.0, 160.0, 60.0])
  red, blue = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[5]
  tracker = FaceTracker(max_gap=2)
  e = tracker.update(np.stack([a, b]), np.stack([red, blue]), (100, 200))
  assert e.tracks == [0, 1] and e.started == [0, 1] and e.border == []
  # listed in the other order and moved by 4 px: Hungarian keeps each person's track
  e = tracker.update(np.stack([b + 4, a + 4]), np.stack([blue, red]), (100, 200))
  assert e.tracks == [1, 0] and e.started == []
  # person 1 missing for 2 frames: lost, then back (resumed); person 0 at the border meanwhile
  e = tracker.update(np.stack([a - 10]), np.stack([red]), (100, 200))
  assert e.lost == [1] and e.ended == [] and e.border == [0]
  tracker.update(np.stack([a - 10]), np.stack([red]), (100, 200))
  e = tracker.update(np.stack([a, b + 8]), np.stack([red, blue]), (100, 200))
  assert e.tracks == [0, 1] and e.resumed == [1] and e.border == []
  # someone else (other colours) where person 1 stood: a new track, not person 1
  e = tracker.update(np.stack([a, b + 8]), np.stack([red, red]), (100, 200))
  assert e.tracks == [0, 2] and e.started == [2]
  for _ in range(2):
    e = tracker.update(np.stack([a]), np.stack([red]), (100, 200))
  assert e.ended == [1]                    # missed 3 > max_gap 2 frames: ended
  assert [t.id for t in tracker.finish()] == [0, 2]
  np.testing.assert_allclose(box_iou(a, np.stack([a, a + [20, 0, 20, 0], b])),
                             [[1.0, 20 * 50 / (2 * 40 * 50 - 20 * 50), 0.0]])


def test_identity_frames_and_descriptor():
  np.testing.assert_array_equal(identity_frames(10, 8), [0, 1, 3, 4, 5, 6, 8, 9])
  np.testing.assert_array_equal(identity_frames(5, 8), [0, 1, 3, 4])       # 4: a power of two
  np.testing.assert_array_equal(identity_frames(3, 8), [0, 2])
  border = [True, True, True, False, False, False, False, False, False, False]
  np.testing.assert_array_equal(identity_frames(10, 4, border), [3, 5, 7, 9])
  np.testing.assert_array_equal(identity_frames(10, 8, border), [0, 1, 3, 4, 5, 6, 8, 9])
  crop = np.zeros((64, 64, 3), np.uint8)
  crop[:, :32] = (200, 40, 40)
  lm = np.stack(np.meshgrid(np.linspace(4, 28, 17), np.linspace(8, 56, 4)), -1).reshape(-1, 2)
  d = appearance_descriptor(crop, lm)                                      # [68, 2] points
  assert d.shape == (128,) and abs(d.sum() - 1) < 1e-6 and d.max() == 1.0   # all one red bin


def test_frame_camera_round_trip_and_frame_transform(embedded):
  """Smoothing happens in the frame's camera: with sigma 0 the crops get their coefficients back,
  and a face filling the frame's crop is the same face in both."""
  coeffs = jax.tree.map(np.asarray, random_coefficients(embedded, jax.random.key(2), 3))
  frame = video_lib.frame_transform((112, 224), 64)
  assert frame.scale == 64 / 224 and frame.translation == (0.0, 16.0)
  crops = [AlignTransform(0.5 + 0.1 * i, (-20.0 * i, -10.0), 64) for i in range(3)]
  back, raw, smoothed = video_lib.smooth_track(embedded, coeffs, crops, [0, 1, 2], (112, 224), 0.0)
  for f in ("angle", "trans"):
    np.testing.assert_allclose(getattr(back, f), getattr(coeffs, f), atol=1e-4)
    np.testing.assert_array_equal(getattr(raw, f), getattr(smoothed, f))
  same = video_lib.crop_in_frame(frame, frame)
  assert same.scale == 1.0 and same.translation == (0.0, 0.0)


# ---- videos -------------------------------------------------------------------------------------

def test_two_people_keep_their_identities(rec, people, tmp_path):
  truths, _ = people
  frames, landmarks = side_by_side(people)
  summary = reconstruct_video(rec, frames, tmp_path, landmarks=landmarks, progress=False)
  assert summary.num_failed == 0 and len(summary.tracks) == 2, summary.format()
  data = read_summary(tmp_path)
  assert [f["tracks"] for f in data["per_frame"]] == [[0, 1]] * FRAMES
  assert data["per_frame"][0]["started"] == [0, 1] and data["frames_without_face"] == []
  fm = rec.face_model
  ids = []
  for k in range(2):
    folder = tmp_path / f"track{k}"
    identity = np.load(folder / "identity.npz")
    ids.append(identity["id"])
    for t in range(FRAMES):
      npz = np.load(folder / f"frame{t:06d}_face{k}.npz")
      # the track's frames are its person's: fitted landmarks on theirs, far from the other's
      lm = npz["lm68"] + 0.5
      assert np.linalg.norm(lm - landmarks[t][k], axis=-1).mean() < 2.0
      assert np.linalg.norm(lm - landmarks[t][1 - k], axis=-1).mean() > 60.0
      np.testing.assert_array_equal(npz["id"], identity["id"])       # one identity per track,
      np.testing.assert_array_equal(npz["tex"], identity["tex"])     # bit for bit
    exps = np.stack([np.load(folder / f"frame{t:06d}_face{k}.npz")["exp"] for t in range(FRAMES)])
    assert np.ptp(exps[:, 0]) > 0.1                                  # expression per frame
    info = json.loads((folder / f"frame000003_face{k}.json").read_text())
    assert info["track"]["track"] == k and info["track"]["frame"] == 3
    rows = (folder / "pose_smoothed.csv").read_text().splitlines()
    assert rows[0].startswith("frame,yaw,pitch,roll,tx,ty,tz,yaw_smoothed") and len(rows) == 11
    yaw = np.array([float(r.split(",")[7]) for r in rows[1:]])       # smoothed, frame camera
    true_yaw = np.degrees(np.asarray(truths[k].angle[:, 1]))
    assert np.abs(np.diff(yaw) - np.diff(true_yaw)).max() < 1.5, (yaw, true_yaw)
    mesh = trimesh.load(folder / "mean_shape.obj", process=False)
    np.testing.assert_allclose(mesh.vertices, identity_shape(fm, identity["id"]), atol=1e-3)
  shapes = [identity_shape(fm, i) for i in ids]
  true = [identity_shape(fm, np.asarray(c.id[0])) for c in truths]
  err = np.array([[np.linalg.norm(shapes[k] - true[p], axis=-1).mean() for p in range(2)]
                  for k in range(2)])
  apart = np.linalg.norm(shapes[0] - shapes[1], axis=-1).mean()
  print(f"identity error to (own, other) truth, mm: {np.round(err, 2).tolist()}; "
        f"tracks {apart:.2f} mm apart")
  # measured: own 1.8 / 1.6 mm, other 6.4 / 6.2 mm, tracks 5.4 mm apart (truths 7.4 mm)
  assert err[0, 0] < 0.4 * err[0, 1] and err[1, 1] < 0.4 * err[1, 0]
  assert apart > 2.5 * max(err[0, 0], err[1, 1])


def test_person_leaving_mid_video_is_reported(rec, people, tmp_path):
  present = [[True, not 4 <= t <= 5] for t in range(FRAMES)]        # person 1 away 2 frames
  frames, landmarks = side_by_side(people, present)
  summary = reconstruct_video(rec, frames, tmp_path / "gap5", landmarks=landmarks,
                              progress=False)
  per_frame = read_summary(tmp_path / "gap5")["per_frame"]
  assert [f["lost"] for f in per_frame][4] == [1] and per_frame[6]["resumed"] == [1]
  assert [f["tracks"] for f in per_frame][4:7] == [[0], [0], [0, 1]]
  assert len(summary.tracks) == 2 and summary.num_failed == 0
  assert summary.tracks[1]["frames"] == [0, 1, 2, 3, 6, 7, 8, 9]
  # away longer than max_gap: that track ends, the person comes back as a new track
  summary = reconstruct_video(rec, frames, tmp_path / "gap1", landmarks=landmarks, max_gap=1,
                              progress=False)
  per_frame = read_summary(tmp_path / "gap1")["per_frame"]
  assert per_frame[4]["lost"] == [1] and per_frame[5]["ended"] == [1]
  assert per_frame[6]["started"] == [2] and per_frame[6]["tracks"] == [0, 2]
  tracks = {t["track"]: t for t in summary.tracks}
  assert tracks[1]["frames"] == [0, 1, 2, 3] and tracks[1]["ended"] == "lost"
  assert tracks[2]["frames"] == [6, 7, 8, 9] and tracks[0]["ended"] == "end of video"
  for k in range(3):                          # every track written, ended ones first
    assert (tmp_path / "gap1" / f"track{k}" / "mean_shape.obj").is_file()
  assert summary.num_failed == 0


def test_face_at_the_border_is_reported(rec, people, tmp_path):
  truths, rendered = people
  # person 0's tile starts 40 px past the left edge and slides in by 10 px a frame
  offsets = [[min(0, -40 + 10 * t), TILE] for t in range(FRAMES)]
  frames, landmarks = compose(rendered, offsets, [[True, True]] * FRAMES)
  cut = [bool(l[0][:, 0].min() < 1.12) for l in landmarks]          # margin: 1 % of 112 px
  assert 0 < sum(cut) < FRAMES
  summary = reconstruct_video(rec, frames, tmp_path, landmarks=landmarks, progress=False)
  per_frame = read_summary(tmp_path)["per_frame"]
  assert [f["border"] == [0] for f in per_frame] == cut
  assert [f["tracks"] for f in per_frame] == [[0, 1]] * FRAMES
  assert summary.tracks[0]["border_frames"] == [t for t in range(FRAMES) if cut[t]]
  assert summary.tracks[1]["border_frames"] == [] and summary.num_failed == 0


def test_video_without_faces_reports_every_frame(rec, tmp_path):
  blank = [np.full((96, 128, 3), 90 + 10 * i, np.uint8) for i in range(6)]
  video = write_video(tmp_path / "empty.avi", blank)
  lines = []
  summary = run_video_tracks([video], tmp_path / "out", reconstructor=rec, progress=False,
                             log=lines.append)
  assert summary.num_failed == 1 and summary.videos[0].failed["no_face"] == 1
  assert lines == [f"skipped: {video}: no face in any of the 6 frames read"]
  data = read_summary(tmp_path / "out" / "empty")
  assert [f["frame"] for f in data["per_frame"]] == list(range(6))
  assert all(f["faces"] == 0 and f["tracks"] == [] for f in data["per_frame"])
  assert data["frames_without_face"] == list(range(6)) and data["tracks"] == []
  top = read_summary(tmp_path / "out")
  assert top["videos"] == [{"video": str(video), "frames": 6, "tracks": 0, "tracks_written": 0,
                            "failed": 1}]
  assert "frames: 6 (6 without a face), tracks: 0" in summary.format()
  # an unreadable video and a missing one: one line each, counted, nothing raised
  (tmp_path / "broken.avi").write_bytes(b"RIFF....AVI garbage" * 20)
  summary = run_video_tracks([tmp_path / "broken.avi", tmp_path / "nope.mp4"], tmp_path / "out2",
                             reconstructor=rec, progress=False, log=lines.append)
  assert summary.num_failed == 2 and "cannot open video" in lines[-2] and "no such" in lines[-1]


def test_real_detection_on_a_video_file(rec, people, tmp_path):
  """dlib on an MJPG video of person 0 alone, with a head drawn behind the face (dlib misses the
  bare renders in most frames)."""
  truths, _ = people
  rendered = render_person(rec.views, rec.face_model, truths[0], head=True)
  frames, landmarks = compose([rendered], [[0]] * FRAMES, [[True]] * FRAMES)
  video = write_video(tmp_path / "one.avi", frames)
  summary = run_video_tracks([video], tmp_path / "out", reconstructor=rec, progress=False,
                             outputs="obj,landmarks,pose")
  one = summary.videos[0]
  assert summary.num_failed == 0 and len(one.tracks) == 1, summary.format()
  assert one.tracks[0]["frames"] == list(range(FRAMES))
  folder = tmp_path / "out" / "one" / "track0"
  assert len(list(folder.glob("frame*_face0.obj"))) == FRAMES
  err = [np.linalg.norm(read_landmark_file(folder / f"frame{t:06d}_face0_lm68.txt")[0]
                        - landmarks[t][0], axis=-1).mean() for t in range(FRAMES)]
  assert max(err) < 8.0, err                  # dlib's points on renders are 3-8 px off
  assert [p.name for p in folder.glob("*.npz")] == ["identity.npz"]    # outputs as asked


def test_a_failing_track_keeps_the_others(rec, people, tmp_path, monkeypatch):
  frames, landmarks = side_by_side(people)
  real = video_lib.fit_track
  calls = []

  def fit_track(r, faces, border=None, *, description="track"):
    calls.append(description)
    if len(calls) == 2:
      raise RuntimeError("out of memory")
    return real(r, faces, border, description=description)

  monkeypatch.setattr(video_lib, "fit_track", fit_track)
  lines = []
  summary = reconstruct_video(rec, frames, tmp_path / "a", landmarks=landmarks, progress=False,
                              log=lines.append)
  assert summary.num_failed == 1 and summary.failed["failed"] == 1
  error = summary.tracks[1]["error"]
  assert error.endswith("track 1: fit or export failed (RuntimeError: out of memory)")
  assert lines == [f"failed: {error}"] and summary.messages == [error]
  assert (tmp_path / "a" / "track0" / "mean_shape.obj").is_file()
  assert not (tmp_path / "a" / "track1").exists()
  # Ctrl-C during the second track: the first track's files and summary.json stay
  calls.clear()

  def interrupted(r, faces, border=None, *, description="track"):
    calls.append(description)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real(r, faces, border, description=description)

  monkeypatch.setattr(video_lib, "fit_track", interrupted)
  with pytest.raises(KeyboardInterrupt):
    reconstruct_video(rec, frames, tmp_path / "b", landmarks=landmarks, progress=False)
  data = read_summary(tmp_path / "b")
  assert data["interrupted"] == "SIGINT" and len(data["per_frame"]) == FRAMES
  assert len(list((tmp_path / "b" / "track0").glob("frame*_face0.obj"))) == FRAMES
