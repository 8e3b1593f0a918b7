"""Helpers shared by the data-pipeline tests: real photos, landmark files, small prepared datasets."""
from __future__ import annotations

import functools
import pathlib

import cv2
import numpy as np
from PIL import Image


@functools.lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
  """scikit-image's astronaut photo (512x512 RGB, one frontal face)."""
  from skimage import data
  return np.ascontiguousarray(data.astronaut())


@functools.lru_cache(maxsize=1)
def astronaut_landmarks() -> np.ndarray:
  """dlib's 68 landmarks of the astronaut's face [68, 2] (computed once per test process)."""
  from data_pipelines.detection import FaceDetector
  det = FaceDetector()
  img = astronaut()
  return det.landmarks(img, det.detect(img)[0].box)


def similarity(rng: np.random.Generator, size=(512, 512), out=(480, 400)):
  """A random similarity transform [2, 3] (project convention) that keeps the face inside `out`."""
  angle = np.radians(rng.uniform(-20, 20))
  s = rng.uniform(0.7, 1.1)
  a = s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  centre_in = np.array([220.0, 120.0])  # the face
  centre_out = np.array([out[1] / 2, out[0] / 2]) + rng.uniform(-40, 40, 2)
  b = centre_out - a @ centre_in
  return np.concatenate([a, b[:, None]], 1)


def write_landmark_photos(folder: pathlib.Path, n: int, seed: int = 0) -> list[pathlib.Path]:
  """Writes n warped copies of the astronaut photo with `.pts` landmark files beside them."""
  from data_pipelines.alignment import warp_affine
  from data_pipelines.landmarks import write_pts
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  img, lm = astronaut(), astronaut_landmarks()
  paths = []
  for i in range(n):
    m = similarity(rng)
    warped = warp_affine(img, m, (480, 400))
    p = folder / f"face_{i:03d}.png"
    Image.fromarray(warped).save(p)
    write_pts(p.with_suffix(".pts"), lm @ m[:, :2].T + m[:, 2])
    paths.append(p)
  return paths


def head() -> np.ndarray:
  """The astronaut's head and shoulders, 260x260 (faster to search than the whole photo)."""
  return np.ascontiguousarray(astronaut()[:260, 100:360])


def write_bad_input_folder(root: pathlib.Path) -> dict[str, str | None]:
  """Photos in every awkward form -> {relative path: expected skip reason or None (usable)}."""
  import io

  import cv2
  from skimage import data
  root.mkdir(parents=True, exist_ok=True)
  (root / "sub").mkdir(exist_ok=True)
  h = Image.fromarray(head())
  expected = {}

  def save(name, img, reason=None, **kw):
    img.save(root / name, **kw)
    expected[name] = reason

  save("good.jpg", h, quality=95)
  save("sub/grey.png", h.convert("L"))
  rgba = h.convert("RGBA")
  alpha = np.full((260, 260), 255, np.uint8)
  alpha[:, :40] = 0                                          # a transparent strip
  rgba.putalpha(Image.fromarray(alpha))
  save("sub/rgba.png", rgba)
  grey16 = (np.asarray(h.convert("L"), np.uint16) * 257)
  cv2.imwrite(str(root / "grey16.png"), grey16)
  expected["grey16.png"] = None
  cv2.imwrite(str(root / "rgb16.png"), cv2.cvtColor(head(), cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
  expected["rgb16.png"] = None
  save("cmyk.jpg", h.convert("CMYK"), quality=95)
  exif = Image.Exif()
  exif[0x0112] = 8                                           # stored rotated: display rotates 90 CCW
  save("rotated.jpg", h.transpose(Image.Transpose.ROTATE_270), exif=exif, quality=95)
  save("photo.webp", h, quality=90)
  save("photo.bmp", h)
  buf = io.BytesIO()
  h.save(buf, "JPEG", quality=95)
  jpeg = buf.getvalue()
  (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
  expected["truncated.jpg"] = "unreadable"
  (root / "corrupt.jpg").write_bytes(jpeg[:20] + bytes(range(256)) * 8)
  expected["corrupt.jpg"] = "unreadable"
  (root / "zero.png").write_bytes(b"")
  expected["zero.png"] = "unreadable"
  (root / "notes.jpg").write_text("not an image")
  expected["notes.jpg"] = "unreadable"
  save("tiny.png", h.resize((16, 16)), "too_small")
  save("sub/cat.jpg", Image.fromarray(data.chelsea()), "no_face", quality=90)
  save("badlm.png", h, "bad_landmarks")
  (root / "badlm.txt").write_text("\n".join(["10 10"] * 30))
  (root / "README.txt").write_text("not a photo, not listed")          # ignored: not an image
  return expected


def write_video(path, frames, fps=10) -> pathlib.Path:
  """uint8 RGB frames [H, W, 3] -> an MJPG video file at `path` (OpenCV)."""
  h, w = frames[0].shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
  assert writer.isOpened()
  for f in frames:
    writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  writer.release()
  return pathlib.Path(path)
