"""What `msma-jax reconstruct` reads: image files, folders (recursive), globs and video files.

`expand_inputs(specs)` turns command-line arguments into sources (files in a stable order, each with a
unique output stem); `iter_items(sources, every=K)` reads them lazily into `InputItem`s: one per image,
one per K-th frame of a video. A source that cannot be used becomes an item carrying an `InputError`
(one line naming the input) instead of pixels, so a batch goes on past it.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import pathlib
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from data_pipelines.images import IMAGE_SUFFIXES, ImageReadError, read_image, special_file_kind

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")

# Why an input produced no reconstruction (keys of the run summary).
FAILURE_REASONS = {
    "missing": "input not found",
    "unreadable": "unreadable image (empty, truncated, corrupt or not an image)",
    "video": "video could not be opened or read",
    "too_small": "image too small",
    "no_face": "no face found",
    "bad_landmarks": "bad landmark file",
    "bad_alignment": "landmarks unusable for alignment",
    "failed": "reconstruction or export failed",
}


class InputError(ValueError):
  """An input that yields no reconstruction; `reason` is a key of FAILURE_REASONS and the message
  (one line) names the input."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    if reason not in FAILURE_REASONS:
      raise ValueError(f"unknown failure reason {reason!r}")
    self.reason = reason

  def __reduce__(self):
    return (InputError, (self.reason, str(self)))


@dataclasses.dataclass(frozen=True)
class Source:
  """One input file: `kind` is "image" or "video"; `stem` names its outputs (unique in a run, may
  contain sub-folders mirroring an input folder); `error` is set for inputs that do not exist."""
  path: pathlib.Path
  kind: str
  stem: str
  error: Optional[InputError] = None


@dataclasses.dataclass
class InputItem:
  """One picture to reconstruct: `image` uint8 RGB [H, W, 3] (None when `error` is set); `name` for
  messages ("clip.mp4 frame 12"); `stem` for output files; `frame` index for video frames."""
  name: str
  stem: str
  image: Optional[np.ndarray] = None
  path: Optional[pathlib.Path] = None
  frame: Optional[int] = None
  error: Optional[InputError] = None


def _kind(path: pathlib.Path) -> str:
  return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


def _media_files(folder: pathlib.Path, exclude: Sequence[pathlib.Path] = ()) -> list[pathlib.Path]:
  """Image and video files under `folder`, sorted; hidden entries and anything under an `exclude`
  folder (resolved; the run's own output folder) left out. FIFOs, sockets and devices with such a
  suffix are kept, so that they are reported (never opened) rather than silently missing."""
  suffixes = set(IMAGE_SUFFIXES) | set(VIDEO_SUFFIXES)
  skip = [pathlib.Path(e).resolve() for e in exclude]

  def wanted(p: pathlib.Path) -> bool:
    if p.suffix.lower() not in suffixes or not (p.is_file() or special_file_kind(p)):
      return False
    if any(part.startswith(".") for part in p.relative_to(folder).parts):
      return False
    r = p.resolve()
    return not any(r == s or s in r.parents for s in skip)

  return sorted(p for p in folder.rglob("*") if wanted(p))


def expand_inputs(specs: Iterable[str | os.PathLike],
                  exclude: Sequence[str | os.PathLike] = ()) -> list[Source]:
  """Files, folders (searched recursively for image and video suffixes; hidden entries skipped) and
  glob patterns -> sources in argument order, each file once. Outputs of a folder's files keep its
  sub-folders in their stems; repeated stems get a `_2`, `_3`, ... suffix. Folders and patterns skip
  files under `exclude` (the output folder: a run must not read its own outputs on the next run).
  FIFOs, sockets and devices become sources with an InputError and are never opened."""
  sources: list[Source] = []
  seen: set[pathlib.Path] = set()
  used: set[str] = set()

  def unique(stem: str) -> str:
    out, k = stem, 2
    while out in used:
      out, k = f"{stem}_{k}", k + 1
    used.add(out)
    return out

  def add(path: pathlib.Path, stem: str):
    key = path.resolve()
    if key in seen:
      return
    seen.add(key)
    sources.append(Source(path, _kind(path), unique(stem)))

  skip = [pathlib.Path(e).expanduser().resolve() for e in exclude]

  def excluded(f: pathlib.Path) -> bool:
    r = f.resolve()
    return any(r == s or s in r.parents for s in skip)

  def special(p: pathlib.Path) -> Optional[Source]:
    kind = special_file_kind(p)
    if kind is None:
      return None
    return Source(p, "image", unique(p.stem or "input"), InputError(
        "unreadable", f"{p}: is a {kind}, not a regular file (not opened)"))

  for spec in specs:
    spec = str(spec)
    p = pathlib.Path(spec).expanduser()
    bad = special(p)
    if bad is not None:
      sources.append(bad)
    elif p.is_dir():
      files = _media_files(p, skip)
      if not files:
        sources.append(Source(p, "image", unique(p.name or "input"),
                              InputError("missing", f"{p}: folder holds no images or videos")))
      for f in files:
        bad = special(f)
        if bad is not None:
          sources.append(bad)
        else:
          add(f, str(f.relative_to(p).with_suffix("")))
    elif p.is_file():
      add(p, p.stem)
    elif glob.has_magic(spec):
      matches = sorted(pathlib.Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True))
      files = [m for m in matches if (m.is_file() or special_file_kind(m)) and not excluded(m)]
      if not files:
        sources.append(Source(p, "image", unique(p.stem or "input"),
                              InputError("missing", f"{spec}: pattern matches no file")))
      for f in files:
        bad = special(f)
        if bad is not None:
          sources.append(bad)
        else:
          add(f, f.stem)
    else:
      sources.append(Source(p, _kind(p), unique(p.stem or "input"),
                            InputError("missing", f"{p}: no such file or folder")))
  return sources


def to_uint8_rgb(image, name: str = "<image>") -> np.ndarray:
  """An array image -> uint8 RGB [H, W, 3]: uint8 kept; floats taken as [0, 1]; grey [H, W] or
  [H, W, 1] replicated; RGBA drops alpha. Raises InputError("unreadable") for other shapes."""
  a = np.asarray(image)
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, axis=-1)
  if a.ndim != 3 or a.shape[-1] not in (3, 4):
    raise InputError("unreadable", f"{name}: expected an RGB image [H, W, 3], got shape {a.shape}")
  a = a[..., :3]
  if a.dtype == np.uint8:
    return np.ascontiguousarray(a)
  if np.issubdtype(a.dtype, np.floating):
    if not np.all(np.isfinite(a)):
      raise InputError("unreadable", f"{name}: image has NaN or infinite pixels")
    return np.ascontiguousarray(np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8))
  if np.issubdtype(a.dtype, np.integer):
    hi = 65535 if a.max(initial=0) > 255 else 255
    return np.ascontiguousarray(np.round(np.clip(a, 0, hi) * (255.0 / hi)).astype(np.uint8))
  raise InputError("unreadable", f"{name}: unsupported image dtype {a.dtype}")


def read_picture(path: str | os.PathLike) -> np.ndarray:
  """An image file -> uint8 RGB [H, W, 3] (EXIF orientation applied); InputError naming the file."""
  try:
    return read_image(path)
  except ImageReadError as e:
    raise InputError("unreadable", str(e)) from e


def video_frame_count(path: str | os.PathLike) -> int:
  """Frames OpenCV reports for a video (0 when unknown or unreadable)."""
  import cv2
  cap = cv2.VideoCapture(str(path))
  try:
    return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
  finally:
    cap.release()


def iter_video(path: pathlib.Path, stem: str, every: int = 1) -> Iterator[InputItem]:
  """Every `every`-th frame (0, K, 2K, ...) of a video as InputItems named `<stem>_frameNNNNNN`.

  A video OpenCV cannot open, or one that yields no frame, gives a single item with an InputError.
  """
  import cv2
  cap = cv2.VideoCapture(str(path))
  if not cap.isOpened():
    cap.release()
    yield InputItem(str(path), stem, path=path, error=InputError(
        "video", f"{path}: cannot open video (OpenCV found no decodable stream)"))
    return
  index = read = 0
  try:
    while True:
      # grab() skips decoding frames that are not sampled.
      if not cap.grab():
        break
      if index % every == 0:
        ok, bgr = cap.retrieve()
        if ok and bgr is not None:
          read += 1
          rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else np.repeat(
              bgr[..., None], 3, -1)
          yield InputItem(f"{path} frame {index}", f"{stem}_frame{index:06d}", image=rgb,
                          path=path, frame=index)
      index += 1
  finally:
    cap.release()
  if read == 0:
    yield InputItem(str(path), stem, path=path, error=InputError(
        "video", f"{path}: no frame could be read from the video"))


def iter_items(sources: Iterable[Source], every: int = 1) -> Iterator[InputItem]:
  """Reads sources lazily: images one item each, videos one item per `every`-th frame."""
  if every < 1:
    raise ValueError(f"--every must be >= 1, got {every}")
  for s in sources:
    if s.error is not None:
      yield InputItem(str(s.path), s.stem, path=s.path, error=s.error)
    elif s.kind == "video":
      yield from iter_video(s.path, s.stem, every)
    else:
      try:
        yield InputItem(str(s.path), s.stem, image=read_picture(s.path), path=s.path)
      except InputError as e:
        yield InputItem(str(s.path), s.stem, path=s.path, error=e)


def count_items(sources: Iterable[Source], every: int = 1) -> int:
  """Expected number of items (for a progress bar total; video frame counts are OpenCV's)."""
  n = 0
  for s in sources:
    if s.kind == "video" and s.error is None:
      frames = video_frame_count(s.path)
      n += max(1, -(-frames // every))
    else:
      n += 1
  return n
