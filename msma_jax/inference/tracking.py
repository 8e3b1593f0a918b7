"""Faces followed across the frames of a video (one track per person) and temporal smoothing.

`FaceTracker.update(boxes, descriptors, image_size)` takes one processed frame's faces at a time:

* association: each live track is matched to at most one face by the Hungarian algorithm
  (`scipy.optimize.linear_sum_assignment`) on the cost `(1 - IoU) + appearance_weight * d`, where
  IoU is between the face's box and the track's box predicted for this frame (its last box moved
  by its last per-frame velocity: a walking person stays matched), and `d` in [0, 1] is the
  Bhattacharyya distance between colour histograms of the aligned crops (`appearance_descriptor`).
  A pair is allowed only when IoU >= `min_iou` and d <= `max_appearance`: the box overlap says
  "same place", the appearance veto says "not someone else who stepped into that place", and the
  appearance term breaks ties between overlapping people.
* track life: an unmatched face starts a new track; a track missing from a frame is "lost" (it may
  come back: "resumed") and "ended" once it has missed more than `max_gap` consecutive processed
  frames. A person away for longer comes back as a new track (no re-identification across ends).
* border: a face whose landmark box comes within `border_margin` of the frame's edge (or crosses
  it) is flagged, since part of it may be cut off.

Frames are counted in processed frames (updates): with `--every K` a gap of 1 is K video frames.
Everything is plain NumPy / SciPy / OpenCV and deterministic (tracks and faces are visited in
order; the Hungarian solver is exact).

`smooth_sequence` smooths per-frame values (pose, translation, expression) of one track over time,
gaps included: a local-linear fit with Gaussian weights around every sample (a Savitzky-Golay
filter of order 1 that needs no regular sampling), so constant-velocity motion passes unchanged,
also at the track's ends and across missed frames, while frame-to-frame noise is averaged out.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import cv2
import numpy as np
import scipy.ndimage
import scipy.optimize

# Defaults (processed frames; distances in [0, 1]).
DEFAULT_MAX_GAP = 5             # a track survives up to 5 missed frames (~0.2 s at 25 fps)
DEFAULT_MIN_IOU = 0.1           # boxes of one face in consecutive frames overlap far more
DEFAULT_APPEARANCE_WEIGHT = 0.5
DEFAULT_MAX_APPEARANCE = 0.6    # Bhattacharyya distance above which two crops are different people
DEFAULT_BORDER_MARGIN = 0.01    # fraction of the frame's shorter side (at least 1 px)
# Temporal smoothing strength: the Gaussian weight's standard deviation in processed frames. 1.5
# averages about 5 frames (white noise std x ~0.5 for the local-linear fit) while a head turn at a
# constant speed passes unchanged; 0 turns smoothing off.
DEFAULT_SMOOTH_SIGMA = 1.5

_FORBIDDEN = 1e6               # cost of a disallowed pair (never kept)


# ---- geometry and appearance ---------------------------------------------------------------------

def landmark_box(landmarks: np.ndarray) -> np.ndarray:
  """[..., 68, 2] pixels -> [..., 4] box (x0, y0, x1, y1) around them."""
  lm = np.asarray(landmarks, np.float64)
  return np.concatenate([lm.min(-2), lm.max(-2)], -1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Intersection over union of boxes a [N, 4] and b [M, 4] (x0, y0, x1, y1) -> [N, M]."""
  a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
  b = np.asarray(b, np.float64).reshape(-1, 4)[None]
  w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
  h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  inter = w * h
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  union = area(a) + area(b) - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def touches_border(box: np.ndarray, image_size: tuple[int, int], margin: float) -> bool:
  """Whether box (x0, y0, x1, y1) comes within `margin` px of the edge of an (H, W) frame."""
  h, w = image_size
  x0, y0, x1, y1 = np.asarray(box, np.float64)
  return bool(x0 < margin or y0 < margin or x1 > w - margin or y1 > h - margin)


def appearance_descriptor(crop: np.ndarray, landmarks: np.ndarray,
                          bins: tuple[int, int] = (16, 8)) -> np.ndarray:
  """A face's colour: the hue-saturation histogram of the aligned crop inside the landmarks' hull.

  crop: uint8 RGB [F, F, 3]; landmarks [68, 2] crop pixels. Hue and saturation ignore brightness,
  so the same face under a changing light keeps its descriptor; the hull keeps the background out.
  Returns float32 [bins[0] * bins[1]] summing to 1.
  """
  mask = np.zeros(crop.shape[:2], np.uint8)
  hull = cv2.convexHull(np.round(np.asarray(landmarks) - 0.5).astype(np.int32))
  cv2.fillConvexPoly(mask, hull, 255)
  hsv = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2HSV)
  hist = cv2.calcHist([hsv], [0, 1], mask if mask.any() else None, list(bins), [0, 180, 0, 256])
  hist = hist.reshape(-1).astype(np.float32)
  return hist / max(float(hist.sum()), 1e-12)


def appearance_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Bhattacharyya distances (0 same colours, 1 disjoint) between descriptors a [N, D] and
  b [M, D] -> [N, M]."""
  a, b = np.asarray(a, np.float32).reshape(len(a), -1), np.asarray(b, np.float32)
  b = b.reshape(len(b), -1)
  return np.array([[cv2.compareHist(x, y, cv2.HISTCMP_BHATTACHARYYA) for y in b] for x in a],
                  np.float64).reshape(len(a), len(b))


# ---- tracks --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Track:
  """One person: `steps` (processed-frame numbers, 0-based), `faces` (index of the face in its
  frame's detections), `boxes` [n, 4] pixels, `border` flags, all in the order seen."""
  id: int
  steps: list = dataclasses.field(default_factory=list)
  faces: list = dataclasses.field(default_factory=list)
  boxes: list = dataclasses.field(default_factory=list)
  border: list = dataclasses.field(default_factory=list)
  descriptor: Optional[np.ndarray] = None
  missed: int = 0                 # consecutive processed frames without a match
  ended: bool = False

  def predicted_box(self, step: int) -> np.ndarray:
    """The last box moved by the last per-frame velocity to processed frame `step`."""
    last = np.asarray(self.boxes[-1])
    if len(self.boxes) < 2:
      return last
    velocity = (last - np.asarray(self.boxes[-2])) / max(self.steps[-1] - self.steps[-2], 1)
    return last + velocity * (step - self.steps[-1])


@dataclasses.dataclass
class FrameEvents:
  """What one processed frame did: `tracks[i]` is the track of face i; started / lost (missing
  from this frame, still alive) / resumed (back after missing) / ended (missed more than max_gap
  frames: finished) list track ids; `border` the tracks whose face touches the frame's edge."""
  step: int
  tracks: list
  started: list = dataclasses.field(default_factory=list)
  lost: list = dataclasses.field(default_factory=list)
  resumed: list = dataclasses.field(default_factory=list)
  ended: list = dataclasses.field(default_factory=list)
  border: list = dataclasses.field(default_factory=list)


class FaceTracker:
  """Associates per-frame faces into tracks (module docstring). Feed frames in order with `update`
  (also frames without faces: they count toward gaps), then call `finish`."""

  def __init__(self, *, max_gap: int = DEFAULT_MAX_GAP, min_iou: float = DEFAULT_MIN_IOU,
               appearance_weight: float = DEFAULT_APPEARANCE_WEIGHT,
               max_appearance: float = DEFAULT_MAX_APPEARANCE,
               border_margin: float = DEFAULT_BORDER_MARGIN, descriptor_momentum: float = 0.7):
    if max_gap < 0:
      raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    if not 0.0 <= min_iou <= 1.0:
      raise ValueError(f"min_iou must be in [0, 1], got {min_iou}")
    self.max_gap, self.min_iou = int(max_gap), float(min_iou)
    self.appearance_weight, self.max_appearance = float(appearance_weight), float(max_appearance)
    self.border_margin = float(border_margin)
    # the track's descriptor follows slow changes (head turns, light) but not one odd frame
    self.descriptor_momentum = float(descriptor_momentum)
    self.tracks: list[Track] = []
    self.step = 0

  @property
  def live(self) -> list[Track]:
    return [t for t in self.tracks if not t.ended]

  def _costs(self, live: list[Track], boxes: np.ndarray, descriptors) -> np.ndarray:
    """[tracks, faces] association costs, _FORBIDDEN where a pair is not allowed."""
    predicted = np.stack([t.predicted_box(self.step) for t in live])
    iou = box_iou(predicted, boxes)
    cost = 1.0 - iou
    allowed = iou >= self.min_iou
    if descriptors is not None and all(t.descriptor is not None for t in live):
      d = appearance_distance(np.stack([t.descriptor for t in live]), descriptors)
      cost = cost + self.appearance_weight * d
      allowed &= d <= self.max_appearance
    return np.where(allowed, cost, _FORBIDDEN)

  def update(self, boxes: np.ndarray, descriptors: Optional[np.ndarray] = None,
             image_size: Optional[tuple[int, int]] = None) -> FrameEvents:
    """One processed frame: boxes [N, 4] pixels (N may be 0), descriptors [N, D] or None,
    image_size (H, W) for the border flag. Returns its `FrameEvents`."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if descriptors is not None:
      descriptors = np.asarray(descriptors, np.float32).reshape(len(boxes), -1)
    events = FrameEvents(self.step, [-1] * len(boxes))
    live = self.live
    matched: dict[int, int] = {}                   # face -> index into live
    if live and len(boxes):
      cost = self._costs(live, boxes, descriptors)
      rows, cols = scipy.optimize.linear_sum_assignment(cost)
      matched = {int(c): int(r) for r, c in zip(rows, cols) if cost[r, c] < _FORBIDDEN}
    margin = (max(1.0, self.border_margin * min(image_size)) if image_size is not None else None)
    for i in range(len(boxes)):
      if i in matched:
        track = live[matched[i]]
        if track.missed:
          events.resumed.append(track.id)
      else:
        track = Track(len(self.tracks))
        self.tracks.append(track)
        events.started.append(track.id)
      border = margin is not None and touches_border(boxes[i], image_size, margin)
      track.steps.append(self.step)
      track.faces.append(i)
      track.boxes.append(boxes[i])
      track.border.append(border)
      track.missed = 0
      if descriptors is not None:
        d = descriptors[i]
        if track.descriptor is not None:
          d = self.descriptor_momentum * track.descriptor + (1 - self.descriptor_momentum) * d
        track.descriptor = (d / max(float(d.sum()), 1e-12)).astype(np.float32)
      events.tracks[i] = track.id
      if border:
        events.border.append(track.id)
    seen = set(events.tracks)
    for track in live:
      if track.id in seen:
        continue
      track.missed += 1
      if track.missed > self.max_gap:
        track.ended = True
        events.ended.append(track.id)
      elif track.missed == 1:
        events.lost.append(track.id)
    self.step += 1
    return events

  def finish(self) -> list[Track]:
    """Ends every live track (the video is over) and returns them."""
    live = self.live
    for track in live:
      track.ended = True
    return live


def track_faces(frames: Sequence[np.ndarray], descriptors: Optional[Sequence] = None,
                image_size: Optional[tuple[int, int]] = None, **tracker_args
                ) -> tuple[list[Track], list[FrameEvents]]:
  """The whole-video form: per-frame boxes [N_t, 4] (or landmarks [N_t, 68, 2]) and optional
  descriptors [N_t, D] -> (tracks, per-frame events). `tracker_args` go to `FaceTracker`."""
  tracker = FaceTracker(**tracker_args)
  events = []
  for t, faces in enumerate(frames):
    faces = np.asarray(faces, np.float64)
    boxes = landmark_box(faces) if faces.ndim == 3 else faces.reshape(-1, 4)
    events.append(tracker.update(boxes, None if descriptors is None else descriptors[t],
                                 image_size))
  tracker.finish()
  return tracker.tracks, events


# ---- smoothing -----------------------------------------------------------------------------------

def smooth_sequence(steps: Sequence[int], values: np.ndarray,
                    sigma: float = DEFAULT_SMOOTH_SIGMA) -> np.ndarray:
  """Temporal smoothing of one track's values [T, D] seen at processed frames `steps` [T]
  (increasing integers; gaps allowed) -> [T, D] float64.

  At each sample a line is fitted by least squares with Gaussian weights exp(-u² / 2σ²) over the
  samples u frames away (|u| <= 3σ) and evaluated there. Missing frames carry no weight; a sample
  with no neighbour in reach keeps its value. sigma in processed frames; 0 returns the values.
  """
  values = np.asarray(values, np.float64)
  steps = np.asarray(steps, np.int64)
  flat = values.reshape(len(values), -1)
  if sigma <= 0 or len(values) < 2:
    return values.copy()
  if np.any(np.diff(steps) <= 0):
    raise ValueError("smooth_sequence: steps must be strictly increasing")
  grid = steps - steps[0]
  n = int(grid[-1]) + 1
  w = np.zeros(n)
  w[grid] = 1.0
  y = np.zeros((n, flat.shape[1]))
  y[grid] = flat
  radius = max(1, int(np.ceil(3.0 * sigma)))
  u = np.arange(-radius, radius + 1, dtype=np.float64)
  g = np.exp(-0.5 * (u / sigma) ** 2)

  def moment(x, k):   # sum over neighbours j of x_j * (t_j - t_i)^k * g(t_j - t_i)
    return scipy.ndimage.correlate1d(x, g * u ** k, axis=0, mode="constant")

  s0, s1, s2 = (moment(w, k)[grid] for k in range(3))
  y0, y1 = (moment(y * w[:, None], k)[grid] for k in range(2))
  det = s0 * s2 - s1 ** 2
  line_fits = (det > 1e-9 * s0 ** 2)[:, None]    # False with a single sample in reach
  # the local line a + b·u evaluated at u = 0: a = (s2·y0 - s1·y1) / det
  line = (s2[:, None] * y0 - s1[:, None] * y1) / np.where(line_fits, det[:, None], 1.0)
  out = np.where(line_fits, line, y0 / s0[:, None])
  return out.reshape(values.shape)
