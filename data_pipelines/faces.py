"""From a photo to aligned training crops: read, find faces and landmarks, align, skin mask.

`FacePreprocessor.process(path)` returns one `AlignedFace` per face (largest first, up to
`max_faces`) or raises `SkipImage` whose `reason` is one of `SKIP_REASONS` and whose message names the
file. Landmarks come, in order of precedence, from the `landmarks=` argument (e.g. a dataset's
annotation), a landmark file beside the image (`landmarks.find_landmark_file`), or dlib.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import NamedTuple

import numpy as np

from data_pipelines.alignment import CROP_SIZE, Aligner, AlignTransform, warp_to_crop
from data_pipelines.detection import SELECTIONS, FaceDetector, box_from_points
from data_pipelines.images import ImageReadError, read_image
from data_pipelines.landmarks import (NUM_LANDMARKS, LandmarkFileError, find_landmark_file,
                                      landmark_problem, read_landmark_file)
from data_pipelines.skin import skin_mask_uint8

# Why an image produced no sample (summary keys of `msma-jax prepare-data`).
SKIP_REASONS = {
    "unreadable": "unreadable image (empty, truncated, corrupt or not an image)",
    "too_small": "image too small",
    "no_face": "no face found",
    "bad_landmarks": "bad landmark file",
    "bad_alignment": "landmarks unusable for alignment",
}


class FoundFace(NamedTuple):
  """A face found in a picture: landmarks [68, 2] (picture pixels), where they came from, the
  detector score, and the points the crop is aligned by when a file gave them ([5, 2] from a
  5-point landmark file, e.g. Deep3DFaceRecon's detections; None: the 68 landmarks')."""
  landmarks: np.ndarray
  origin: str
  score: float
  align_points: np.ndarray | None = None

  @property
  def alignment_landmarks(self) -> np.ndarray:
    return self.landmarks if self.align_points is None else self.align_points


class SkipImage(Exception):
  """An input that yields no sample; `reason` is a key of SKIP_REASONS, str(e) names the file."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    assert reason in SKIP_REASONS, reason
    self.reason = reason

  def __reduce__(self):   # picklable: results come back from detection worker processes
    return (SkipImage, (self.reason, str(self)))


@dataclasses.dataclass
class AlignedFace:
  """One aligned face.

  image [S, S, 3] uint8 RGB crop; landmarks [68, 2] crop pixels; skin_mask [S, S] uint8
  (255 * P(skin)); transform image -> crop; source_landmarks [68, 2] original-image pixels;
  image_size (H, W) of the original (EXIF-rotated) image; origin: where the landmarks came from
  ("detector", "file", "file5+detector" for a 5-point file, "annotation"); score: detector score
  (NaN when not detected).
  """
  image: np.ndarray
  landmarks: np.ndarray
  skin_mask: np.ndarray
  transform: AlignTransform
  source_landmarks: np.ndarray
  image_size: tuple[int, int]
  face_index: int
  origin: str
  score: float = float("nan")


class FacePreprocessor:
  """Detection + landmarks + alignment + skin mask for photos.

  detector: "hog" | "cnn" | "cascade" (dlib, `detection.FaceDetector`); select: which detected
  faces an image keeps ("all", "largest", "central": `detection.select_faces`); max_faces: faces
  kept per image after that, largest first (None = all);
  min_side: images whose shorter side is smaller are skipped as too small; crop_size: output side;
  use_landmark_files: read `.pts`/`.txt` files beside images; face_model: defines the reference
  alignment (embedded model by default), or `reference` gives its [5, 2] points directly, or
  `aligner` replaces the alignment (e.g. `deep3d_alignment.Deep3DAligner`). dlib is loaded lazily,
  only when a detection is needed.
  """

  def __init__(self, detector: str = "hog", *, max_faces: int | None = 1, min_side: int = 32,
               crop_size: int = CROP_SIZE, use_landmark_files: bool = True, face_model=None,
               upsample: int = 1, detect_max_side: int = 1280, min_score: float = 0.0,
               reference: np.ndarray | None = None, select: str = "all", aligner=None):
    if max_faces is not None and max_faces < 1:
      raise ValueError(f"max_faces must be >= 1 or None, got {max_faces}")
    if select not in SELECTIONS:
      raise ValueError(f"unknown face selection {select!r}; choose one of {SELECTIONS}")
    self.select = select
    self.detector_kind = detector
    self.max_faces, self.min_side, self.crop_size = max_faces, int(min_side), int(crop_size)
    self.use_landmark_files = use_landmark_files
    self.aligner = aligner if aligner is not None else Aligner(face_model, crop_size, reference)
    self._detector_args = dict(upsample=upsample, max_side=detect_max_side, min_score=min_score)
    self._detector = None

  @property
  def detector(self):
    if self._detector is None:
      self._detector = FaceDetector(self.detector_kind, **self._detector_args)
    return self._detector

  # ---- steps -------------------------------------------------------------------------------------
  def find_landmarks(self, image: np.ndarray, name: str, landmark_file=None,
                     landmarks=None) -> tuple[list[FoundFace], int]:
    """-> ([FoundFace(landmarks [68, 2], origin, score, align_points)] of the faces kept (`select`, then at most
    max_faces, largest first), number of faces found before selection)."""
    faces = []
    if landmarks is not None:
      lm = np.asarray(landmarks, np.float64).reshape(-1, NUM_LANDMARKS, 2)
      faces = [FoundFace(f, "annotation", float("nan")) for f in lm]
    elif landmark_file is not None:
      try:
        sets = read_landmark_file(landmark_file)
      except LandmarkFileError as e:
        raise SkipImage("bad_landmarks", f"{name}: landmark file {e}") from e
      for i, points in enumerate(sets):   # checked before dlib is given a box made from them
        problem = landmark_problem(points, image.shape[:2])
        if problem:
          face = f" face {i}:" if len(sets) > 1 else ""
          raise SkipImage("bad_landmarks", f"{name}: landmark file {landmark_file}:{face} {problem}")
      if sets.shape[1] == 5:
        box = box_from_points(sets[0])
        # the 68 points come from the detector; the crop keeps the file's own five
        faces = [FoundFace(self.detector.landmarks(image, box), "file5+detector", float("nan"),
                           np.asarray(sets[0], np.float64))]
      else:
        faces = [FoundFace(f, "file", float("nan")) for f in sets]
    else:
      kept, n_found = self.detector.detect_landmarks(image, self.select)
      faces = [FoundFace(lm, "detector", det.score) for det, lm in kept[: self.max_faces]]
      if not faces:
        h, w = image.shape[:2]
        raise SkipImage("no_face", f"{name}: no face found ({w}x{h} image, {self.detector_kind} "
                        "detector)")
      return faces, n_found
    if len(faces) > 1 and landmark_file is not None:
      faces.sort(key=lambda f: -np.prod(np.ptp(f[0], axis=0)))   # largest first, like detections
    return faces[: self.max_faces], len(faces)

  def align(self, image: np.ndarray, landmarks: np.ndarray, *, name: str = "<image>",
            face_index: int = 0, origin: str = "detector", score: float = float("nan"),
            align_points: np.ndarray | None = None) -> AlignedFace:
    """Aligns one face given its [68, 2] landmarks in `image` (uint8 RGB [H, W, 3]), by
    `align_points` [5, 2] instead when given (a 5-point landmark file's)."""
    try:
      transform = self.aligner.fit(landmarks if align_points is None else align_points,
                                   image.shape[:2])
    except ValueError as e:
      raise SkipImage("bad_alignment", f"{name}: face {face_index}: {e}") from e
    crop = warp_to_crop(image, transform)
    return AlignedFace(image=crop, landmarks=transform.to_crop(landmarks).astype(np.float32),
                       skin_mask=skin_mask_uint8(crop), transform=transform,
                       source_landmarks=np.asarray(landmarks, np.float32),
                       image_size=tuple(image.shape[:2]), face_index=face_index, origin=origin,
                       score=score)

  # ---- whole images ------------------------------------------------------------------------------
  def process_array(self, image: np.ndarray, *, name: str = "<image>", landmark_file=None,
                    landmarks=None) -> list[AlignedFace]:
    """uint8 RGB [H, W, 3] -> aligned faces (see `process`)."""
    h, w = image.shape[:2]
    if min(h, w) < self.min_side:
      raise SkipImage("too_small", f"{name}: image too small ({w}x{h}; the shorter side must be at "
                      f"least {self.min_side} px)")
    found, _ = self.find_landmarks(image, name, landmark_file, landmarks)
    return [self.align(image, f.landmarks, name=name, face_index=i, origin=f.origin,
                       score=f.score, align_points=f.align_points)
            for i, f in enumerate(found)]

  def process(self, path: str | os.PathLike, *, landmarks=None) -> list[AlignedFace]:
    """Reads, detects (unless landmarks are given or a landmark file exists), aligns.

    Raises SkipImage (reason in SKIP_REASONS, message naming `path`) when nothing usable is found.
    """
    path = pathlib.Path(path)
    try:
      image = read_image(path)
    except ImageReadError as e:
      raise SkipImage("unreadable", str(e)) from e
    lm_file = find_landmark_file(path) if (self.use_landmark_files and landmarks is None) else None
    return self.process_array(image, name=str(path), landmark_file=lm_file, landmarks=landmarks)


@dataclasses.dataclass
class Summary:
  """Counts of a preprocessing run: images read, faces found, images skipped per reason."""
  images: int = 0
  faces: int = 0
  skipped: dict = dataclasses.field(default_factory=lambda: {k: 0 for k in SKIP_REASONS})
  messages: list = dataclasses.field(default_factory=list)

  def add_faces(self, n: int) -> None:
    self.images += 1
    self.faces += n

  def add_skip(self, e: SkipImage) -> None:
    self.images += 1
    self.skipped[e.reason] += 1
    self.messages.append(str(e))

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())

  def to_dict(self) -> dict:
    return {"images": self.images, "faces": self.faces, "skipped": dict(self.skipped),
            "messages": list(self.messages)}

  def format(self) -> str:
    lines = [f"images read: {self.images}, faces found: {self.faces}, "
             f"images skipped: {self.num_skipped}"]
    for k, n in self.skipped.items():
      if n:
        lines.append(f"  skipped, {SKIP_REASONS[k]}: {n}")
    return "\n".join(lines)
