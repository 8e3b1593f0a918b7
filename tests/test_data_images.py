"""Awkward inputs: every bad or unusual photo is either handled or skipped with a message naming it."""
import numpy as np
import pytest
from data_fixtures import astronaut, astronaut_landmarks, head, write_bad_input_folder
from PIL import Image

from data_pipelines.faces import FacePreprocessor, SkipImage
from data_pipelines.images import ImageReadError, decode_image, read_image


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("photos")
  return root, write_bad_input_folder(root)


@pytest.fixture(scope="module")
def pre():
  return FacePreprocessor()


def test_decoders_normalise_pixel_formats(folder):
  root, _ = folder
  ref = head().astype(np.int16)
  grey_ref = np.asarray(Image.fromarray(head()).convert("L"), np.int16)
  np.testing.assert_array_equal(read_image(root / "sub/grey.png")[..., 1], grey_ref)
  np.testing.assert_array_equal(read_image(root / "grey16.png")[..., 0], grey_ref)   # /257, not clipped
  np.testing.assert_array_equal(read_image(root / "rgb16.png"), ref)
  np.testing.assert_array_equal(read_image(root / "photo.bmp"), ref)
  rgba = read_image(root / "sub/rgba.png")
  assert (rgba[:, :40] == 255).all()                        # transparent -> white
  np.testing.assert_array_equal(rgba[:, 40:], ref[:, 40:])
  cmyk = read_image(root / "cmyk.jpg").astype(np.int16)
  assert cmyk.shape == (260, 260, 3) and np.abs(cmyk - ref).mean() < 6
  rot = read_image(root / "rotated.jpg").astype(np.int16)  # EXIF orientation 8 applied: upright
  assert rot.shape == (260, 260, 3) and np.abs(rot - ref).mean() < 4
  assert np.abs(read_image(root / "photo.webp").astype(np.int16) - ref).mean() < 5


@pytest.mark.parametrize("name,pattern", [
    ("truncated.jpg", "truncated.jpg: truncated image data"),
    ("corrupt.jpg", "corrupt.jpg: (corrupt image data|not a recognised image format)"),
    ("zero.png", r"zero.png: empty file \(0 bytes\)"),
    ("notes.jpg", "notes.jpg: not a recognised image format"),
])
def test_unreadable_files_raise_one_error_naming_the_file(folder, name, pattern):
  root, _ = folder
  with pytest.raises(ImageReadError, match=pattern):
    read_image(root / name)


@pytest.mark.parametrize("name", ["good.jpg", "sub/grey.png", "sub/rgba.png", "grey16.png",
                                  "rgb16.png", "cmyk.jpg", "rotated.jpg", "photo.webp", "photo.bmp"])
def test_usable_variants_align_the_same_face(folder, pre, name):
  root, _ = folder
  faces = pre.process(root / name)
  assert len(faces) == 1
  want = astronaut_landmarks() - [100, 0]                  # the head crop's offset in the photo
  err = np.linalg.norm(faces[0].source_landmarks - want, axis=-1)
  assert np.median(err) < 3.0, (name, np.median(err))


@pytest.mark.parametrize("name,reason,pattern", [
    ("truncated.jpg", "unreadable", "truncated.jpg: truncated"),
    ("zero.png", "unreadable", "zero.png: empty file"),
    ("tiny.png", "too_small", r"tiny.png: image too small \(16x16"),
    ("sub/cat.jpg", "no_face", "cat.jpg: no face found"),
    ("badlm.png", "bad_landmarks", "badlm.txt: has 30 points, expected 68"),
])
def test_unusable_photos_are_skipped_with_a_reason(folder, pre, name, reason, pattern):
  root, _ = folder
  with pytest.raises(SkipImage, match=pattern) as e:
    pre.process(root / name)
  assert e.value.reason == reason


def test_huge_photo(tmp_path, pre):
  """8000x6000: searched on a shrunk copy, landmarks on full resolution, crop area-averaged."""
  import cv2
  f = 6000 / 512
  big = cv2.resize(astronaut(), (6000, 6000), interpolation=cv2.INTER_LINEAR)
  canvas = np.zeros((6000, 8000, 3), np.uint8)
  canvas[:, 1000:7000] = big
  Image.fromarray(canvas).save(tmp_path / "huge.jpg", quality=90)
  del big, canvas
  faces = pre.process(tmp_path / "huge.jpg")
  assert faces[0].image_size == (6000, 8000)
  want = (astronaut_landmarks()) * f + [1000, 0]
  err = np.linalg.norm(faces[0].source_landmarks - want, axis=-1)
  assert np.median(err) < 3.0 * f, np.median(err)          # dlib at 12x the resolution, in px/f
  small = pre.process_array(astronaut(), name="astronaut")[0]
  diff = np.abs(faces[0].image.astype(np.int16) - small.image.astype(np.int16)).mean()
  assert diff < 12, diff                                   # the same crop, not an aliased one
  assert 0.01 < faces[0].transform.scale < 0.2
  with pytest.raises(ImageReadError, match="huge.jpg: truncated"):
    decode_image((tmp_path / "huge.jpg").read_bytes()[:100000], str(tmp_path / "huge.jpg"))
