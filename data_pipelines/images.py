"""Reading photos robustly: one decoder path for every format, EXIF orientation, odd pixel formats.

`read_image` returns uint8 RGB `[H, W, 3]` (row 0 at the top) for JPEG, PNG, BMP and WebP files in any
of the modes seen in the wild, or raises `ImageReadError` with one message naming the file:

* zero-byte, truncated or corrupt files, and files that are not images -> ImageReadError;
* EXIF orientation (tags 2-8) is applied, so the pixels are upright as a viewer shows them;
* grayscale (L, 1, I;16, I, F) -> replicated to three channels; 16-bit and 32-bit data are scaled to
  8 bits by their full range (65535 for 16-bit PNGs), not clipped;
* alpha (RGBA, LA, palette with transparency) is composited over white;
* CMYK / YCbCr / LAB JPEGs -> converted to RGB by Pillow (Adobe inverted CMYK included).
"""
from __future__ import annotations

import os
import pathlib
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageReadError(ValueError):
  """An image file that cannot be decoded into RGB pixels (the message names the file)."""


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
  mode = img.mode
  if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    a = np.asarray(img).astype(np.float64)
    full = 65535.0 if mode.startswith("I;16") or a.max(initial=0) <= 65535 else a.max()
    a = np.round(np.clip(a, 0, full) * (255.0 / full)).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=-1))
  if mode == "F":
    a = np.asarray(img, np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    a = np.round(np.nan_to_num(a) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=-1))
  if mode == "P":
    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    mode = img.mode
  if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, rgba)
  if img.mode != "RGB":
    img = img.convert("RGB")
  return np.ascontiguousarray(np.asarray(img, np.uint8))


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
  """Decodes encoded image bytes to uint8 RGB [H, W, 3]; `name` is used in error messages."""
  import io
  if len(data) == 0:
    raise ImageReadError(f"{name}: empty file (0 bytes)")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_uint8_rgb(img)
  except Image.DecompressionBombWarning as e:
    raise ImageReadError(f"{name}: image too large to decode safely ({e})") from e
  except Image.DecompressionBombError as e:
    raise ImageReadError(f"{name}: image too large to decode safely ({e})") from e
  except Image.UnidentifiedImageError as e:
    raise ImageReadError(f"{name}: not a recognised image format (corrupt or not an image)") from e
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    msg = str(e)
    if "truncated" in msg:
      raise ImageReadError(f"{name}: truncated image data ({msg})") from e
    raise ImageReadError(f"{name}: corrupt image data ({type(e).__name__}: {msg})") from e


def special_file_kind(path: str | os.PathLike) -> str | None:
  """'FIFO', 'socket' or 'device' for such files, else None (also for missing files).

  They are never opened: reading a FIFO named `x.jpg` blocks until someone writes to it.
  """
  try:
    mode = os.stat(path).st_mode
  except OSError:
    return None
  if stat.S_ISFIFO(mode):
    return "FIFO"
  if stat.S_ISSOCK(mode):
    return "socket"
  if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
    return "device"
  return None


def read_image(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file -> uint8 RGB [H, W, 3], EXIF orientation applied (see the module doc)."""
  path = pathlib.Path(path)
  kind = special_file_kind(path)
  if kind is not None:
    raise ImageReadError(f"{path}: is a {kind}, not a regular file (not opened)")
  try:
    data = path.read_bytes()
  except OSError as e:
    raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from e
  return decode_image(data, str(path))


def encode_image(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
  """Encodes uint8 RGB [H, W, 3] (or uint8 [H, W] grayscale) as JPEG or PNG bytes with OpenCV."""
  import cv2
  a = np.ascontiguousarray(rgb)
  if a.dtype != np.uint8:
    raise ValueError(f"encode_image expects uint8 pixels, got {a.dtype}")
  if a.ndim == 3:
    a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
  if fmt == "jpeg":
    ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
  elif fmt == "png":
    ok, buf = cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, 1])
  else:
    raise ValueError(f"unknown image encoding {fmt!r} (expected 'jpeg' or 'png')")
  if not ok:
    raise ValueError(f"OpenCV could not encode a {a.shape} image as {fmt}")
  return buf.tobytes()


def decode_crop(data: bytes, channels: int = 3) -> np.ndarray:
  """Fast decoder for the dataset's own encoded crops (OpenCV): uint8 [H, W, 3] RGB or [H, W]."""
  import cv2
  flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
  a = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
  if a is None:
    raise ImageReadError("dataset record: stored image bytes could not be decoded")
  return cv2.cvtColor(a, cv2.COLOR_BGR2RGB) if channels == 3 else a
