"""The detector cascade on generated hard cases of a real photo, and face selection."""
import cv2
import numpy as np
import pytest

from data_fixtures import astronaut
from data_pipelines.detection import Detection, FaceDetector, grey_rgb, select_faces


@pytest.fixture(scope="module")
def cascade():
  return FaceDetector("cascade", upsample=0, min_score=0.3)


@pytest.fixture(scope="module")
def reference(cascade):
  """The astronaut's face as the cascade finds it on the original: box and 68 points."""
  img = astronaut()
  (det, lm), = cascade.detect_landmarks(img)[0]
  return img, det, lm


def _ocular(lm):
  return np.linalg.norm(lm[45] - lm[36])


def test_greyscale_copy_gives_the_same_face(cascade, reference):
  img, det, lm = reference
  grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
  (g_det, g_lm), = cascade.detect_landmarks(grey)[0]
  assert g_det.box == det.box and g_det.score == det.score      # the detector reads the luma
  np.testing.assert_array_equal(grey_rgb(img), grey_rgb(grey))


def test_downscaled_copy_finds_the_same_face(cascade, reference):
  """At 0.3x the face is ~26 px wide: HOG needs its twice-upsampled stage."""
  img, det, lm = reference
  small = cv2.resize(img, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
  (s_det, s_lm), = cascade.detect_landmarks(small)[0]
  assert s_det.stage == "hog-up2"
  err = np.linalg.norm(s_lm / 0.3 - lm, axis=-1).mean() / _ocular(lm)
  assert err < 0.08, err


@pytest.mark.parametrize("degrees", [60.0, -90.0])
def test_rotated_copy_finds_the_same_face(cascade, reference, degrees):
  """Turned by 60 or 90 deg (beyond HOG's upright filters) the face is still found, by a later stage,
  and its 68 points come back in the rotated picture's frame at the rotated positions."""
  img, det, lm = reference
  h, w = img.shape[:2]
  m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), degrees, 1.0)
  turned = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
  found = cascade.detect_landmarks(turned)[0]
  assert len(found) == 1
  r_det, r_lm = found[0]
  assert r_det.stage != "hog"                 # HOG's first pass misses a face turned this far
  expected = (lm - 0.5) @ m[:, :2].T + m[:, 2] + 0.5
  err = np.linalg.norm(r_lm - expected, axis=-1).mean() / _ocular(lm)
  assert err < 0.1, (r_det.stage, err)


def test_no_face_in_a_scene_without_people(cascade):
  rng = np.random.default_rng(0)
  scene = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 4)
  assert cascade.detect(scene) == []


def _det(x, y, size):
  return Detection((x, y, x + size, y + size), 1.0)


def test_face_selection_policies():
  faces = [_det(10, 10, 120), _det(300, 200, 60), _det(500, 20, 80)]    # picture 640 x 480
  assert select_faces(faces, (480, 640), "all") == faces
  assert select_faces(faces, (480, 640), "largest") == [faces[0]]
  # the 60 px face sits on the centre (320, 240): nearest in units of its size
  assert select_faces(faces, (480, 640), "central") == [faces[1]]
  # a large face a little off-centre beats a small one far from it
  assert select_faces([_det(250, 150, 180), _det(40, 40, 30)], (480, 640), "central")[0].box[0] == 250
  with pytest.raises(ValueError, match="unknown face selection"):
    select_faces(faces, (480, 640), "first")
