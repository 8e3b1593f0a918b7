"""Alignment, flip permutation, landmark files, skin GMM and dlib detection on real photos."""
import numpy as np
import pytest
from data_fixtures import astronaut, astronaut_landmarks
from PIL import Image

from data_pipelines import alignment, landmarks
from data_pipelines.alignment import AlignTransform, Aligner, fit_alignment, warp_to_crop
from data_pipelines.faces import FacePreprocessor
from data_pipelines.landmarks import FLIP_PERMUTATION, flip_landmarks, five_points


# ---- alignment -------------------------------------------------------------------------------------

def test_reference_points_from_embedded_model(embedded):
  ref = alignment.reference_five_points(embedded, 224)
  # mean face frontal at the origin: eyes level and mirror-symmetric about the centre column 112
  assert ref.shape == (5, 2)
  np.testing.assert_allclose(ref[0, 1], ref[1, 1], atol=0.5)
  np.testing.assert_allclose(ref[0, 0] + ref[1, 0], 224, atol=1.0)
  np.testing.assert_allclose(ref[3, 0] + ref[4, 0], 224, atol=1.0)
  assert ref[0, 1] < ref[2, 1] < ref[3, 1]            # eyes above nose above mouth
  # pinhole by hand: x = 112 + 1015 X / (1000 - Z) for each eye corner (mm), eye centre = mean
  lm3d = np.asarray(embedded.landmarks_3d(embedded.mean_shape), np.float64)
  px = 112 + 1015 * lm3d[:, 0] / (1000 - lm3d[:, 2])
  np.testing.assert_allclose(ref[1, 0] - ref[0, 0], px[[42, 45]].mean() - px[[36, 39]].mean(),
                             rtol=1e-6)
  np.testing.assert_allclose(ref[2, 1], 112 - 1015 * lm3d[30, 1] / (1000 - lm3d[30, 2]), rtol=1e-6)
  # a crop of another size scales about its centre
  np.testing.assert_allclose(alignment.reference_five_points(embedded, 112), ref / 2, atol=1e-6)


def test_alignment_maps_landmarks_onto_reference(rng):
  aligner = Aligner()
  ref = aligner.reference
  for s, t in [(0.35, (-40.0, 25.0)), (1.7, (-150.0, -90.0)), (4.0, (-800.0, -500.0))]:
    pts = (ref - np.array(t)) / s                      # photo positions that align exactly
    lm68 = np.zeros((68, 2))
    for group, p in zip(landmarks.FIVE_POINT_GROUPS, pts):
      lm68[list(group)] = p
    tr = aligner.fit(lm68)
    np.testing.assert_allclose(tr.scale, s, rtol=1e-9)
    err = np.abs(five_points(tr.to_crop(lm68)) - ref).max()
    assert err < 1e-9, err
    np.testing.assert_allclose(tr.to_image(tr.to_crop(lm68)), lm68, atol=1e-9)
  # with noise: the fit is the least-squares solution of [x 1 0; y 0 1] [s tx ty]^T = ref
  noisy = (ref - 7.0) / 0.8 + rng.normal(scale=2.0, size=(5, 2))
  tr = fit_alignment(noisy, ref)
  a = np.zeros((10, 3))
  a[0::2, 0], a[1::2, 0] = noisy[:, 0], noisy[:, 1]
  a[0::2, 1], a[1::2, 2] = 1, 1
  sol = np.linalg.lstsq(a, ref.reshape(-1), rcond=None)[0]
  np.testing.assert_allclose([tr.scale, *tr.translation], sol, rtol=1e-9)
  # pixel residual of the 5 points is the least-squares residual, about the noise level
  rms = np.sqrt(((tr.to_crop(noisy) - ref) ** 2).sum(-1).mean())
  assert 0.5 < rms < 4.0, rms


def _blob_image(h, w, points, sigma):
  yy, xx = np.mgrid[0:h, 0:w] + 0.5
  img = np.zeros((h, w), np.float64)
  for x, y in points:
    img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
  return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("scale", [0.3, 1.6])
def test_crop_pixels_match_transformed_landmarks(scale):
  """Blobs drawn at the photo's 5 points land on the reference points in the warped crop."""
  ref = Aligner().reference
  t = np.array([15.0, -30.0]) if scale > 1 else np.array([20.0, 10.0])
  pts = (ref - t) / scale
  h, w = int(pts[:, 1].max() / 0.8) + 20, int(pts[:, 0].max() / 0.8) + 20
  photo = _blob_image(h, w, pts, sigma=3.0 / scale)
  crop = warp_to_crop(photo, AlignTransform(scale, tuple(t))).astype(np.float64)
  yy, xx = np.mgrid[0:224, 0:224] + 0.5
  for r in ref:
    win = (np.abs(xx - r[0]) < 9) & (np.abs(yy - r[1]) < 9)
    wgt = crop * win
    centroid = np.array([(wgt * xx).sum(), (wgt * yy).sum()]) / wgt.sum()
    assert np.abs(centroid - r).max() < 0.15, (centroid, r)


def test_alignment_rejects_degenerate_landmarks():
  aligner = Aligner()
  with pytest.raises(ValueError, match="coincide"):
    aligner.fit(np.ones((68, 2)))
  with pytest.raises(ValueError, match="mirrored"):
    aligner.fit(-five_points(np.asarray(astronaut_landmarks())))   # upside down


# ---- flip permutation ------------------------------------------------------------------------------

def test_flip_permutation_is_an_involution_matching_the_model_symmetry(embedded):
  p = FLIP_PERMUTATION
  np.testing.assert_array_equal(p[p], np.arange(68))
  assert sorted(p) == list(range(68))
  np.testing.assert_array_equal(np.where(p == np.arange(68))[0], [8, 27, 28, 29, 30, 33, 51, 57, 62, 66])
  # independent check: the model's mirror map sends landmark vertex i to landmark vertex p[i]
  li, sym = np.asarray(embedded.landmark_indices), np.asarray(embedded.symmetry)
  np.testing.assert_array_equal(sym[li], li[p])


def test_flip_mirrors_a_synthetic_face(embedded):
  """Mirroring the image landmarks of a random posed face = the landmarks of its mirror-image face."""
  from data_pipelines.synthetic import SyntheticOptions, sample_coefficients
  from msma_jax import camera as cam
  from msma_jax.face_model import Coefficients
  flat = sample_coefficients(embedded, np.random.default_rng(3), 2, SyntheticOptions(
      max_yaw_deg=50, max_roll_deg=15))
  c = Coefficients.from_flat(flat, embedded.sizes)
  c = c.replace(trans=np.array([[20.0, -10.0, 30.0], [-15.0, 5.0, 0.0]]))
  camera = cam.Camera.for_face_model(embedded, 224)
  verts = embedded.shape(c)
  px = np.asarray(cam.project(cam.rigid_transform(verts, c.angle, c.trans), camera))
  lm = px[:, np.asarray(embedded.landmark_indices)]
  # mirror image: vertex j of the mirrored face = x-mirrored vertex sym(j); pose conjugated by the
  # mirror: (pitch, yaw, roll) -> (pitch, -yaw, -roll), translation x -> -x
  mirror = np.array([-1.0, 1.0, 1.0])
  mverts = np.asarray(verts)[:, np.asarray(embedded.symmetry)] * mirror
  mangle = np.asarray(c.angle) * np.array([1.0, -1.0, -1.0])
  mpx = np.asarray(cam.project(cam.rigid_transform(mverts, mangle, np.asarray(c.trans) * mirror),
                               camera))
  mlm = mpx[:, np.asarray(embedded.landmark_indices)]
  np.testing.assert_allclose(flip_landmarks(lm, 224), mlm, atol=1e-3)
  assert np.abs(flip_landmarks(lm, 224) - lm).max() > 20     # the faces are not symmetric copies
  np.testing.assert_allclose(flip_landmarks(flip_landmarks(lm, 224), 224), lm, atol=1e-4)


# ---- landmark files --------------------------------------------------------------------------------

def test_landmark_files(tmp_path):
  lm = np.asarray(astronaut_landmarks())
  p = landmarks.write_pts(tmp_path / "a.pts", lm)
  text = p.read_text().splitlines()
  assert text[:3] == ["version: 1", "n_points: 68", "{"] and text[-1] == "}"
  np.testing.assert_allclose(float(text[3].split()[0]), lm[0, 0] + 0.5, atol=1e-3)  # 1-based
  np.testing.assert_allclose(landmarks.read_landmark_file(p)[0], lm, atol=1e-3)
  # .txt: 0-based pixel indices, comma or space separated, two faces
  rows = np.concatenate([lm, lm + 100]) - 0.5
  (tmp_path / "b.txt").write_text("\n".join(f"{x:.4f}, {y:.4f}" for x, y in rows))
  two = landmarks.read_landmark_file(tmp_path / "b.txt")
  assert two.shape == (2, 68, 2)
  np.testing.assert_allclose(two[1], lm + 100, atol=1e-3)
  (tmp_path / "c.txt").write_text("10 20\n30 20\n20 30\n12 40\n28 40\n")
  np.testing.assert_allclose(landmarks.read_landmark_file(tmp_path / "c.txt")[0, 0], [10.5, 20.5])
  (tmp_path / "bad.txt").write_text("\n".join(["1 2"] * 30))
  with pytest.raises(landmarks.LandmarkFileError, match=r"bad.txt: has 30 points, expected 68"):
    landmarks.read_landmark_file(tmp_path / "bad.txt")
  (tmp_path / "hdr.pts").write_text("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "}\n")
  with pytest.raises(landmarks.LandmarkFileError, match="hdr.pts: header says n_points: 68 but"):
    landmarks.read_landmark_file(tmp_path / "hdr.pts")
  (tmp_path / "nan.txt").write_text("x y\n" * 68)
  with pytest.raises(landmarks.LandmarkFileError, match="nan.txt: line 1 is not 'x y'"):
    landmarks.read_landmark_file(tmp_path / "nan.txt")
  # lookup: .pts before .txt, beside the image or in detections/
  (tmp_path / "img.jpg").write_bytes(b"")
  assert landmarks.find_landmark_file(tmp_path / "img.jpg") is None
  (tmp_path / "detections").mkdir()
  (tmp_path / "detections" / "img.txt").write_text("")
  assert landmarks.find_landmark_file(tmp_path / "img.jpg").parent.name == "detections"
  (tmp_path / "img.pts").write_text("")
  assert landmarks.find_landmark_file(tmp_path / "img.jpg").name == "img.pts"


# ---- skin probability ------------------------------------------------------------------------------

def test_skin_probability_matches_scipy_mixture():
  from scipy.stats import multivariate_normal

  from data_pipelines import skin
  colours = np.array([[[224, 172, 140], [120, 80, 60], [40, 90, 200], [128, 128, 128],
                       [250, 250, 250], [0, 0, 0]]], np.uint8)
  p = skin.skin_probability(colours)[0]

  def mixture(gmm, x):
    return sum(w * multivariate_normal(mu, np.linalg.inv(inv)).pdf(x)
               for w, mu, inv in zip(gmm["weights"], gmm["means"], gmm["cov_inv"]))

  for rgb, got in zip(colours[0], p):
    r, g, b = rgb.astype(float)
    ycc = [16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255,
           128 + (-37.797 * r - 74.203 * g + 112 * b) / 255,
           128 + (112 * r - 93.786 * g - 18.214 * b) / 255]
    ls, ln = 0.8 * mixture(skin._SKIN, ycc), 0.2 * mixture(skin._NONSKIN, ycc)
    want = ls / (ls + ln) if ls + ln > 0 else None
    if want is not None:
      np.testing.assert_allclose(got, want, atol=2e-3)   # published determinants ~ 4 digits
  assert p[0] > 0.9 and p[1] > 0.5 and p[2] < 0.05 and p[3] < 0.1   # skin tones vs blue / grey
  assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))


# ---- detection on real photos ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pre():
  return FacePreprocessor()


def test_detects_and_aligns_the_astronaut(pre):
  faces = pre.process_array(astronaut(), name="astronaut")
  assert len(faces) == 1
  f = faces[0]
  assert f.origin == "detector" and f.score > 0.5 and f.image.shape == (224, 224, 3)
  assert f.skin_mask.shape == (224, 224) and f.skin_mask.dtype == np.uint8
  # the aligned 5 points sit near the reference (residual of a scale+shift fit to a real face)
  err = np.linalg.norm(five_points(f.landmarks) - pre.aligner.reference, axis=-1)
  assert err.max() < 20.0 and err.mean() < 10.0, err
  # the transform maps the crop landmarks back onto the photo's landmarks
  np.testing.assert_allclose(f.transform.to_image(f.landmarks), f.source_landmarks, atol=1e-3)
  # skin: cheeks are skin, the dark uniform below the chin is not
  cheek = f.landmarks[[2, 14]].mean(0) * 0.5 + f.landmarks[30] * 0.5
  assert f.skin_mask[int(cheek[1]), int(cheek[0])] > 200
  # the landmarks are the face's: eye corners of the crop are dark-ish compared with the cheeks
  assert f.landmarks[:, 0].min() > 0 and f.landmarks[:, 0].max() < 224


def test_several_faces_largest_first(pre):
  import cv2
  head = astronaut()[:260, 100:360]                        # the face and hair, 260x260
  small = cv2.resize(head, (170, 170), interpolation=cv2.INTER_AREA)
  canvas = np.full((300, 520, 3), 200, np.uint8)
  canvas[20:280, 240:500] = head
  canvas[60:230, 30:200] = small
  pre_all = FacePreprocessor(max_faces=None)
  faces = pre_all.process_array(canvas, name="two")
  assert len(faces) == 2
  widths = [np.ptp(f.source_landmarks[:, 0]) for f in faces]
  np.testing.assert_allclose(widths[1] / widths[0], 170 / 260, rtol=0.08)
  assert faces[0].source_landmarks[:, 0].mean() > 240 > faces[1].source_landmarks[:, 0].mean()
  assert [f.face_index for f in faces] == [0, 1]
  assert len(pre.process_array(canvas, name="two")) == 1        # default: the largest only


def test_five_point_file_then_predicted_landmarks(tmp_path, pre):
  lm = np.asarray(astronaut_landmarks())
  Image.fromarray(astronaut()).save(tmp_path / "a.png")
  p5 = five_points(lm) - 0.5
  (tmp_path / "a.txt").write_text("\n".join(f"{x} {y}" for x, y in p5))
  f = pre.process(tmp_path / "a.png")[0]
  assert f.origin == "file5+detector"
  # the 68 points predicted inside the box derived from the 5 points agree with the detector's
  assert np.median(np.linalg.norm(f.source_landmarks - lm, axis=-1)) < 2.5
  # the crop is framed by the file's own five points, not by the predicted 68's
  assert f.transform == pre.aligner.fit(p5 + 0.5)


def test_exif_rotated_photo_is_upright(tmp_path, pre):
  img = Image.fromarray(astronaut())
  exif = Image.Exif()
  exif[0x0112] = 6        # "rotate 90 CW to display": stored pixels are the upright ones rotated CCW
  img.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "r.jpg", exif=exif, quality=95)
  f = pre.process(tmp_path / "r.jpg")[0]
  ref = pre.process_array(np.asarray(Image.open(tmp_path / "r.jpg").transpose(
      Image.Transpose.ROTATE_270)), name="upright")[0]
  assert f.image_size == (512, 512)
  np.testing.assert_allclose(f.source_landmarks, ref.source_landmarks, atol=0.5)
  np.testing.assert_allclose(f.source_landmarks, astronaut_landmarks(), atol=4.0)
