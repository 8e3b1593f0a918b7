"""Video with identities: faces tracked across frames, one shape per person, smoothed motion.

    frames ──Reconstructor.prepare (detect or take landmarks, align)──▶ faces of each frame
           ──FaceTracker (overlap + colour, Hungarian; `tracking`)──▶ one track per person
           ──fit_track: one identity and albedo per track, expression / pose / light per frame
           ──smooth_sequence: pose, translation and expression over time, in the frame's camera
           ──files of the track, written as soon as the track ends

Identity of a track (`fit_track`): with test-time fitting, the identity (and albedo) is fitted
jointly on up to `batch_size` frames of the track (`CoefficientFitter.fit(shared=("id", "tex"))`:
one value for all of them), chosen evenly over the track and away from the frame's border when
there are enough such frames; their count is a power of two (or batch_size), so the batch needs no
padding -- a repeated frame would count twice in the shared fit -- and few shapes compile. The other
frames are then fitted with that identity and albedo held fixed (expression, pose, light and
translation move), in padded batches like `Reconstructor.solve`. Without fitting (encoder only),
the track's identity and albedo are the mean of the encoder's per-frame predictions.

Smoothing happens in the frame's camera (the face model's default camera looking at the whole
frame, its longer side as the crop side; `frame_transform`), where a head moving through the scene
moves smoothly; each frame's coefficients are moved there from its aligned crop (`framing.reframe`)
and back after smoothing, so the landmarks and meshes written are those of the smoothed motion.
Light (gamma) is kept per frame.

Files (`reconstruct_video(reconstructor, video, out_dir)`):

    out_dir/summary.json                     per frame: faces, their tracks, started / lost /
                                             resumed / ended tracks, faces at the border, failures;
                                             per track: frames, files, identity frames
    out_dir/track<k>/frame<NNNNNN>_face<i>.*  per frame (i: the face's index in that frame): the
                                             mesh with the smoothed expression (.obj, model space),
                                             details (.json: `FaceResult.info` + "track"), ...
                                             (`outputs`, default TRACK_DEFAULT_OUTPUTS)
    out_dir/track<k>/pose_smoothed.csv       frame, yaw pitch roll (deg), tx ty tz (model units) in
                                             the frame's camera, raw and smoothed
    out_dir/track<k>/mean_shape.obj          the track's identity-only neutral shape: the mesh the
                                             MICC protocol takes per video (`evaluation.micc`)
    out_dir/track<k>/identity.npz            its identity and albedo coefficients (id, tex)

A frame that fails (alignment, detection errors) is reported in summary.json and skipped; a track
whose fit or export fails is reported and the others go on; summary.json is written however the
run ends, and finished tracks' files stay. `run_video_tracks` is the `msma-jax reconstruct
--tracks` job over many inputs.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import pathlib
import time
import weakref
from typing import Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from data_pipelines.alignment import AlignTransform
from data_pipelines.skin import skin_probability
from msma_jax.face_model import FIELDS, Coefficients
from msma_jax.inference.batch import SUMMARY_FILE, FailureCounts, recorded, reporter
from msma_jax.inference.export import save_mesh
from msma_jax.inference.fit import CoefficientFitter
from msma_jax.inference.framing import reframe
from msma_jax.inference.inputs import (FAILURE_REASONS, InputError, InputItem, Source,
                                       expand_inputs, iter_items, iter_video, to_uint8_rgb,
                                       video_frame_count)
from msma_jax.inference.reconstruct import _bucket, _pad, fit_quality
from msma_jax.inference.result import FaceResult, parse_outputs
from msma_jax.inference.tracking import (DEFAULT_MAX_GAP, DEFAULT_SMOOTH_SIGMA, FaceTracker,
                                         appearance_descriptor, landmark_box, smooth_sequence)

SHARED = ("id", "tex")                     # one value per track
SMOOTHED = ("angle", "trans", "exp")       # smoothed over time (light stays per frame)
# Per-frame outputs of a track: what needs no picture kept in memory (overlays and UV textures
# would need every frame of the track until it ends).
TRACK_OUTPUTS = ("obj", "ply", "npz", "mat", "landmarks", "pose", "depth")
TRACK_DEFAULT_OUTPUTS = ("obj", "npz", "pose")


def track_outputs(spec: str | Sequence[str] | None) -> tuple[str, ...]:
  """--save for tracks: None / 'default' -> TRACK_DEFAULT_OUTPUTS, 'all' -> TRACK_OUTPUTS, else
  `result.parse_outputs`; ValueError (one line) for outputs tracks do not write."""
  if spec is None or spec == "default":
    return TRACK_DEFAULT_OUTPUTS
  if spec == "all":
    return TRACK_OUTPUTS
  outputs = parse_outputs(spec)
  bad = [k for k in outputs if k not in TRACK_OUTPUTS]
  if bad:
    raise ValueError(f"--save {','.join(bad)}: not written per track (choose from "
                     f"{', '.join(TRACK_OUTPUTS)})")
  return outputs


# ---- geometry ------------------------------------------------------------------------------------

def frame_transform(image_size: tuple[int, int], crop_size: int) -> AlignTransform:
  """The whole (H, W) frame as one crop of `crop_size` px (longer side fitted, centred)."""
  h, w = image_size
  s = crop_size / max(h, w)
  return AlignTransform(s, ((crop_size - s * w) / 2.0, (crop_size - s * h) / 2.0), crop_size)


def crop_in_frame(face: AlignTransform, frame: AlignTransform) -> AlignTransform:
  """The face's crop in terms of the frame crop: face crop = k · frame crop + t (both from the
  same picture: face = s_f · p + t_f, frame = s_r · p + t_r)."""
  k = face.scale / frame.scale
  t = np.asarray(face.translation) - k * np.asarray(frame.translation)
  return AlignTransform(k, (float(t[0]), float(t[1])), face.size)


def inverse(transform: AlignTransform) -> AlignTransform:
  """B = (A - t) / s: the transform taking A's framing back to B's."""
  s, (tx, ty) = transform.scale, transform.translation
  return AlignTransform(1.0 / s, (-tx / s, -ty / s), transform.size)


def _row(coeffs: Coefficients, i: int) -> Coefficients:
  return jax.tree.map(lambda a: np.asarray(a)[i], coeffs)


def _stack(rows: Sequence[Coefficients]) -> Coefficients:
  return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *rows)


def _take(coeffs: Coefficients, idx) -> Coefficients:
  return jax.tree.map(lambda a: np.asarray(a)[np.asarray(idx)], coeffs)


def pose_deg(angle: np.ndarray) -> np.ndarray:
  """[..., 3] angles (x, y, z radians) -> [..., 3] (yaw, pitch, roll) degrees, as
  `FaceResult.pose`."""
  a = np.degrees(np.asarray(angle, np.float64))
  return np.stack([a[..., 1], a[..., 0], a[..., 2]], -1)


# ---- one track's coefficients --------------------------------------------------------------------

def identity_frames(n: int, batch_size: int, border: Optional[Sequence[bool]] = None) -> np.ndarray:
  """Indices (sorted) of the frames of an n-frame track the shared identity is fitted on: k =
  min(n, batch_size) rounded down to a power of two (unless it is batch_size), spread evenly over
  the frames whose face is away from the border when there are k of them, else over all."""
  k = min(n, batch_size)
  if k < batch_size:
    k = 1 << (k.bit_length() - 1)
  pool = np.arange(n)
  if border is not None:
    inside = pool[~np.asarray(border, bool)]
    if len(inside) >= k:
      pool = inside
  return pool[np.round(np.linspace(0, len(pool) - 1, k)).astype(int)]


_FIXED_FITTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fixed_identity_fitter(rec) -> CoefficientFitter:
  """The reconstructor's fitter without the shared groups (built once per reconstructor)."""
  fitter = _FIXED_FITTERS.get(rec)
  if fitter is None:
    config = ml_collections.ConfigDict(rec.fit_config.to_dict())
    config.groups = tuple(g for g in config.groups if g not in SHARED)
    config.landmark_groups = tuple(g for g in rec.fitter.landmark_groups if g not in SHARED)
    fitter = _FIXED_FITTERS[rec] = CoefficientFitter(rec.face_model, rec.camera, config)
  return fitter


def _fit_inputs(rec, crops: np.ndarray, landmarks: np.ndarray) -> dict:
  """The fitter's batch (as `Reconstructor.solve` builds it)."""
  batch = {"landmarks": jnp.asarray(landmarks, jnp.float32)}
  if rec.fit_steps > 0:
    batch["image"] = jnp.asarray(crops, jnp.float32) / 255.0
    batch["skin_mask"] = jnp.asarray(np.stack([skin_probability(c) for c in crops]), jnp.float32)
  return batch


def _initial(rec, faces) -> Coefficients:
  """Encoder predictions (mean face without one) [n], in padded batches."""
  n, out = len(faces), []
  for start in range(0, n, rec.batch_size):
    stop = min(n, start + rec.batch_size)
    b = _bucket(stop - start, rec.batch_size)
    crops = (_pad(np.stack([f.model_crop for f in faces[start:stop]]), b)
             if rec.model is not None else np.zeros((b,)))
    out.append(jax.tree.map(lambda a: np.asarray(a)[: stop - start], rec._predict_init(crops)))
  return jax.tree.map(lambda *a: np.concatenate(a), *out)


def fit_track(reconstructor, faces: Sequence, border: Optional[Sequence[bool]] = None, *,
              description: str = "track") -> tuple[Coefficients, dict]:
  """Coefficients of one track's faces (`Reconstructor.prepare` results, in frame order) with one
  identity and albedo: -> (Coefficients [n] NumPy in each face's aligned crop, info: {"identity":
  how it was found, "identity_frames": indices into faces, "terms": mean final fit terms}).
  See the module docstring; border [n] flags faces at the frame's edge (left out of the identity
  fit when possible)."""
  rec, n = reconstructor, len(faces)
  crops = np.stack([f.crop for f in faces])
  landmarks = np.stack([f.landmarks for f in faces])
  with rec._on_device():
    init = _initial(rec, faces)
    if rec.fit_steps == 0 and rec.landmark_steps == 0:
      mean = {g: np.broadcast_to(getattr(init, g).mean(0), getattr(init, g).shape).copy()
              for g in SHARED}
      return init.replace(**mean), {"identity": "mean of the encoder's predictions",
                                    "identity_frames": list(range(n)), "terms": {}}
    idx = identity_frames(n, rec.batch_size, border)
    shared, terms = rec.fitter.fit(
        _take(init, idx), _fit_inputs(rec, crops[idx], landmarks[idx]), steps=rec.fit_steps,
        landmark_steps=rec.landmark_steps, progress=rec.progress,
        description=f"{description}: identity on {len(idx)} frame(s)", shared=SHARED)
    shared = jax.tree.map(np.asarray, shared)
    values = {g: np.broadcast_to(getattr(shared, g)[:1], getattr(init, g).shape).copy()
              for g in SHARED}
    coeffs = jax.tree.map(np.array, init.replace(**values))
    for f in FIELDS:
      getattr(coeffs, f)[idx] = getattr(shared, f)
    all_terms = {k: [np.asarray(v)] for k, v in terms.items()}
    rest = np.setdiff1d(np.arange(n), idx)
    fitter = _fixed_identity_fitter(rec)
    for start in range(0, len(rest), rec.batch_size):
      part = rest[start:start + rec.batch_size]
      b = _bucket(len(part), rec.batch_size)
      chunk = jax.tree.map(lambda a: jnp.asarray(_pad(a[part], b)), coeffs)
      batch = _fit_inputs(rec, _pad(crops[part], b), _pad(landmarks[part], b))
      fitted, t = fitter.fit(chunk, batch, steps=rec.fit_steps, landmark_steps=rec.landmark_steps,
                             progress=rec.progress,
                             description=f"{description}: frames {start + 1}-"
                                         f"{start + len(part)} of {len(rest)}")
      for f in FIELDS:
        if f not in SHARED:                # the shared groups stay bit-identical
          getattr(coeffs, f)[part] = np.asarray(getattr(fitted, f))[: len(part)]
      for k, v in t.items():
        all_terms.setdefault(k, []).append(np.asarray(v)[: len(part)])
  mean_terms = {k: float(np.mean(np.concatenate(v))) for k, v in all_terms.items()}
  return coeffs, {"identity": f"fitted jointly on {len(idx)} frame(s)",
                  "identity_frames": [int(i) for i in idx], "terms": mean_terms}


def smooth_track(face_model, coeffs: Coefficients, transforms: Sequence[AlignTransform],
                 steps: Sequence[int], image_size: tuple[int, int], sigma: float
                 ) -> tuple[Coefficients, Coefficients, Coefficients]:
  """Temporal smoothing of one track (module docstring): coeffs [n] in each face's crop
  (transforms: picture -> crop), steps [n] processed-frame numbers. -> (smoothed coefficients
  in the crops, raw and smoothed coefficients in the frame's camera)."""
  size = transforms[0].size
  frame = frame_transform(image_size, size)
  in_frame = [crop_in_frame(t, frame) for t in transforms]
  raw = _stack([reframe(face_model, _row(coeffs, i), t) for i, t in enumerate(in_frame)])
  raw = raw.replace(angle=np.unwrap(np.asarray(raw.angle, np.float64), axis=0).astype(np.float32))
  smoothed = raw.replace(**{g: smooth_sequence(steps, getattr(raw, g), sigma).astype(np.float32)
                            for g in SMOOTHED})
  back = _stack([reframe(face_model, _row(smoothed, i), inverse(t))
                 for i, t in enumerate(in_frame)])
  return back, raw, smoothed


# ---- summaries -----------------------------------------------------------------------------------

@dataclasses.dataclass
class VideoSummary(FailureCounts):
  """What one video's tracking did: per processed frame, per track, failures per reason.

  Failures (`num_failed`): unreadable video, a video with no face at all, frames that failed for
  another reason than having no face, tracks whose fit or export failed. Frames without a face in
  a video that has faces are reported (`frames_without_face`), not counted."""
  name: str
  frames: int = 0                    # processed frames read
  faces: int = 0
  per_frame: list = dataclasses.field(default_factory=list)
  tracks: list = dataclasses.field(default_factory=list)
  failed: dict = dataclasses.field(default_factory=lambda: {k: 0 for k in FAILURE_REASONS})
  messages: list = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  interrupted: Optional[str] = None

  @property
  def frames_without_face(self) -> list[int]:
    return [f["frame"] for f in self.per_frame if f["faces"] == 0]

  @property
  def tracks_written(self) -> int:
    return sum(1 for t in self.tracks if t.get("error") is None)

  @property
  def files(self) -> int:
    return sum(t.get("files", 0) for t in self.tracks)

  def format(self) -> str:
    empty = len(self.frames_without_face)
    lines = [f"{self.name}: frames: {self.frames} ({empty} without a face), "
             f"faces: {self.faces}, tracks: {len(self.tracks)} ({self.tracks_written} written, "
             f"{self.files} files), failed: {self.num_failed} [{self.seconds:.1f} s]"
             + (f", interrupted ({self.interrupted})" if self.interrupted else "")]
    return "\n".join(lines + self.failure_lines(self.failed))

  def to_dict(self) -> dict:
    return {"video": self.name, "frames": self.frames, "faces": self.faces,
            "frames_without_face": self.frames_without_face,
            "tracks": self.tracks, "failed": {k: v for k, v in self.failed.items() if v},
            "messages": self.messages, "per_frame": self.per_frame,
            "seconds": round(self.seconds, 3), "interrupted": self.interrupted}


@dataclasses.dataclass
class TracksSummary(FailureCounts):
  """A `run_video_tracks` run: one VideoSummary per video (or image sequence), input failures."""
  videos: list = dataclasses.field(default_factory=list)
  failed: dict = dataclasses.field(default_factory=lambda: {k: 0 for k in FAILURE_REASONS})
  messages: list = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  interrupted: Optional[str] = None

  @property
  def num_failed(self) -> int:
    return sum(self.failed.values()) + sum(v.num_failed for v in self.videos)

  def format(self) -> str:
    frames = sum(v.frames for v in self.videos)
    empty = sum(len(v.frames_without_face) for v in self.videos)
    tracks = sum(len(v.tracks) for v in self.videos)
    written = sum(v.tracks_written for v in self.videos)
    files = sum(v.files for v in self.videos)
    lines = [f"videos: {len(self.videos)}, frames: {frames} ({empty} without a face), tracks: "
             f"{tracks} ({written} written, {files} files), failed: {self.num_failed} "
             f"[{self.seconds:.1f} s]" + (f", interrupted ({self.interrupted})"
                                          if self.interrupted else "")]
    failed = {k: n + sum(v.failed[k] for v in self.videos) for k, n in self.failed.items()}
    return "\n".join(lines + self.failure_lines(failed))

  def to_dict(self) -> dict:
    return {"videos": [{"video": v.name, "frames": v.frames, "tracks": len(v.tracks),
                        "tracks_written": v.tracks_written, "failed": v.num_failed}
                       for v in self.videos],
            "failed": {k: v for k, v in self.failed.items() if v}, "messages": self.messages,
            "seconds": round(self.seconds, 3), "interrupted": self.interrupted}


# ---- one video -----------------------------------------------------------------------------------

@dataclasses.dataclass
class TrackFrameResult(FaceResult):
  """A `FaceResult` of one frame of a track; its JSON gains a "track" section."""
  track_info: dict = dataclasses.field(default_factory=dict)

  def info(self) -> dict:
    return {**super().info(), "track": self.track_info}


def _frames(video, stem: str, every: int) -> tuple[Iterator[InputItem], Optional[int]]:
  """(InputItems with .frame set, their expected count or None) of a video file, a sequence of
  arrays or InputItems, or a sequence of image `Source`s (read one at a time)."""
  if isinstance(video, (str, os.PathLike)):
    path = pathlib.Path(video)
    if not path.exists():
      err = InputError("missing", f"{path}: no such file")
      return iter([InputItem(str(path), stem, path=path, error=err)]), 1
    count = video_frame_count(path)
    return iter_video(path, stem, every), (-(-count // every) if count else None)
  frames = list(video)
  kept = range(0, len(frames), every)
  if frames and all(isinstance(f, Source) for f in frames):
    items = iter_items([frames[i] for i in kept])
    return (dataclasses.replace(it, frame=i) for i, it in zip(kept, items)), len(kept)

  def items():
    for i in kept:
      f = frames[i]
      if isinstance(f, InputItem):
        yield dataclasses.replace(f, frame=i if f.frame is None else f.frame)
        continue
      label = f"{stem} frame {i}"
      try:
        yield InputItem(label, f"{stem}_frame{i:06d}", image=to_uint8_rgb(f, label), frame=i)
      except InputError as e:
        yield InputItem(label, f"{stem}_frame{i:06d}", frame=i, error=e)
  return items(), len(kept)


class _TrackWriter:
  """Fits, smooths and writes the tracks of one video as they end."""

  def __init__(self, rec, out: pathlib.Path, outputs, smooth: float, summary: VideoSummary,
               say: Callable[[str], None]):
    self.rec, self.out, self.outputs, self.smooth = rec, out, outputs, float(smooth)
    self.summary, self.say = summary, say
    self.buffers: dict[int, list] = {}       # track id -> [(step, frame, face, border, size)]

  def add(self, track_id: int, entry: tuple) -> None:
    self.buffers.setdefault(track_id, []).append(entry)

  def finish(self, track_id: int, why: str) -> None:
    entries = self.buffers.pop(track_id, [])
    if not entries:
      return
    t0 = time.perf_counter()
    folder = self.out / f"track{track_id}"
    record = {"track": track_id, "folder": folder.name, "frames": [e[1] for e in entries],
              "first_frame": entries[0][1], "last_frame": entries[-1][1],
              "ended": why, "files": 0, "error": None}
    self.summary.tracks.append(record)
    try:
      record.update(self._write(track_id, folder, entries))
    except Exception as e:              # this track only; the files it wrote stay
      err = InputError("failed", f"{self.summary.name}: track {track_id}: fit or export failed "
                                 f"({type(e).__name__}: {e})")
      record["error"] = str(err)
      record["files"] = sum(1 for p in folder.iterdir()) if folder.is_dir() else 0
      self.summary.add_failure(err)
      self.say(f"failed: {err}")
    record["seconds"] = round(time.perf_counter() - t0, 3)

  def _write(self, track_id: int, folder: pathlib.Path, entries: list) -> dict:
    rec, fm = self.rec, self.rec.face_model
    steps = [e[0] for e in entries]
    frames = [e[1] for e in entries]
    faces = [e[2] for e in entries]
    border = [e[3] for e in entries]
    size = entries[0][4]
    raw_crop, fit_info = fit_track(rec, faces, border, description=f"track {track_id}")
    coeffs, raw, smoothed = smooth_track(fm, raw_crop, [f.transform for f in faces], steps, size,
                                         self.smooth)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    identity_set = set(fit_info["identity_frames"])
    n = len(faces)
    with rec._on_device():
      for start in range(0, n, rec.batch_size):
        stop = min(n, start + rec.batch_size)
        b = _bucket(stop - start, rec.batch_size)
        chunk = jax.tree.map(lambda a: jnp.asarray(_pad(np.asarray(a)[start:stop], b)), coeffs)
        lm, vertices, colours = (np.asarray(a)[: stop - start]
                                 for a in rec._describe(fm, chunk, rec.camera))
        for j in range(stop - start):
          i = start + j
          f = faces[i]
          info = {"track": track_id, "frame": frames[i], "step": steps[i],
                  "at_border": bool(border[i]), "identity_frame": i in identity_set,
                  "smoothing_sigma_frames": self.smooth,
                  "frame_camera": {
                      "pose_deg": _pose_dict(smoothed.angle[i]),
                      "pose_deg_raw": _pose_dict(raw.angle[i]),
                      "translation": [float(v) for v in smoothed.trans[i]],
                      "translation_raw": [float(v) for v in raw.trans[i]],
                      "note": "the face model's default camera looking at the whole frame"},
                  "pose_deg_raw": _pose_dict(raw_crop.angle[i])}
          picture_lm = f.transform.to_image(lm[j])
          result = TrackFrameResult(
              source=f"{self.summary.name} frame {frames[i]}", face_index=f.face_index,
              image_size=tuple(size), coefficients=_row(coeffs, i),
              landmarks=picture_lm, input_landmarks=f.input_landmarks,
              transform=f.transform, crop=f.crop, vertices=vertices[j], colours=colours[j],
              origin=f.origin, score=f.score,
              fit={"init": rec.init_name, "landmark_steps": rec.landmark_steps,
                   "steps": rec.fit_steps, "identity": fit_info["identity"],
                   "track_terms_mean": fit_info["terms"],
                   **fit_quality(picture_lm, f.input_landmarks, {}, 0, rec.fit_config)},
              photo=None, views=rec.views, track_info=info)
          written += len(result.save(folder, f"frame{frames[i]:06d}", self.outputs))
    written += self._write_pose_csv(folder / "pose_smoothed.csv", frames, raw, smoothed)
    identity = _row(coeffs, 0)
    neutral = identity.replace(exp=np.zeros_like(identity.exp))
    vertices, albedo = (np.asarray(a) for a in fm.decode(neutral))
    save_mesh(folder / "mean_shape.obj", vertices, np.asarray(fm.triangles),
              np.clip(albedo, 0.0, 1.0))
    np.savez(folder / "identity.npz", id=identity.id, tex=identity.tex,
             frames=np.asarray(frames))
    written += 2
    return {"files": written, "identity": fit_info["identity"],
            "identity_frames": [frames[i] for i in fit_info["identity_frames"]],
            "border_frames": [frames[i] for i in range(n) if border[i]],
            "fit_terms": fit_info["terms"]}

  @staticmethod
  def _write_pose_csv(path: pathlib.Path, frames, raw: Coefficients, smoothed: Coefficients) -> int:
    cols = ["yaw", "pitch", "roll", "tx", "ty", "tz"]
    with open(path, "w", newline="") as fh:
      w = csv.writer(fh)
      w.writerow(["frame", *cols, *(c + "_smoothed" for c in cols)])
      for i, frame in enumerate(frames):
        a = np.concatenate([pose_deg(raw.angle[i]), raw.trans[i]])
        b = np.concatenate([pose_deg(smoothed.angle[i]), smoothed.trans[i]])
        w.writerow([frame, *(f"{v:.4f}" for v in a), *(f"{v:.4f}" for v in b)])
    return 1


def _pose_dict(angle) -> dict:
  yaw, pitch, roll = (float(v) for v in pose_deg(angle))
  return {"yaw": yaw, "pitch": pitch, "roll": roll}


def reconstruct_video(reconstructor, video, out_dir: str | os.PathLike, *, every: int = 1,
                      smooth: float = DEFAULT_SMOOTH_SIGMA, max_gap: int = DEFAULT_MAX_GAP,
                      landmarks: Optional[Sequence] = None,
                      outputs: Optional[str | Sequence[str]] = None, name: Optional[str] = None,
                      tracker_args: Optional[dict] = None, progress: bool = True,
                      log: Callable[[str], None] | None = None) -> VideoSummary:
  """Tracks the faces of one video and reconstructs each person (module docstring).

  video: a video file, a sequence of frames (uint8 / float RGB arrays [H, W, 3], or InputItems);
  every: keep every K-th frame; smooth: smoothing sigma in processed frames (0 = off); max_gap:
  processed frames a track may miss before it ends; landmarks: optional per video frame (index =
  frame number, before `every`) [N, 68, 2] picture pixels of its N faces (N may be 0) instead of
  detection; outputs: per-frame files (`track_outputs`); tracker_args: more `FaceTracker` options.
  Returns the VideoSummary also written to out_dir/summary.json (in a finally block).
  """
  t0 = time.perf_counter()
  if every < 1:
    raise ValueError(f"every must be >= 1, got {every}")
  if smooth < 0:
    raise ValueError(f"smooth must be >= 0, got {smooth}")
  outputs = track_outputs(outputs)
  rec = reconstructor
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  label = name or (str(video) if isinstance(video, (str, os.PathLike)) else "video")
  stem = pathlib.Path(label).stem or "video"
  summary = VideoSummary(label)
  items, total = _frames(video, stem, every)
  tracker = FaceTracker(max_gap=max_gap, **(tracker_args or {}))

  say = reporter(log)

  writer = _TrackWriter(rec, out, outputs, smooth, summary, say)
  bar = tqdm(total=total, desc=f"tracking {stem}", unit="frame", disable=not progress,
             dynamic_ncols=True)
  unreadable = False
  # every finished track's files are already written when the run stops, however it stops
  with recorded(summary, out / SUMMARY_FILE, t0), contextlib.closing(bar):
    for item in items:
      if item.error is not None and item.image is None and item.frame is None:
        summary.add_failure(item.error)        # the whole video (cannot open, no frame)
        say(f"skipped: {item.error}")
        unreadable = True
        continue
      bar.update(1)
      summary.frames += 1
      entry = {"frame": item.frame, "faces": 0, "tracks": [], "started": [], "lost": [],
               "resumed": [], "ended": [], "border": [], "failure": None}
      summary.per_frame.append(entry)
      faces = []
      if item.error is not None:
        entry["failure"] = str(item.error)
        summary.add_failure(item.error)
      else:
        try:
          given = None
          if landmarks is not None:
            given = np.asarray(landmarks[item.frame] if item.frame < len(landmarks) else [],
                               np.float64).reshape(-1, 68, 2)
          faces = rec.prepare(item.image, name=item.name, landmarks=given)
        except InputError as e:
          if e.reason != "no_face":
            entry["failure"] = str(e)
            summary.add_failure(e)
            say(f"frame skipped: {e}")
        except Exception as e:              # detector or alignment crash: this frame only
          err = InputError("failed", f"{item.name}: {type(e).__name__}: {e}")
          entry["failure"] = str(err)
          summary.add_failure(err)
          say(f"frame skipped: {err}")
      entry["faces"] = len(faces)
      summary.faces += len(faces)
      boxes = (landmark_box(np.stack([f.input_landmarks for f in faces])) if faces
               else np.zeros((0, 4)))
      descriptors = (np.stack([appearance_descriptor(f.crop, f.landmarks) for f in faces])
                     if faces else None)
      size = item.image.shape[:2] if item.image is not None else None
      events = tracker.update(boxes, descriptors, size)
      for key in ("tracks", "started", "lost", "resumed", "ended", "border"):
        entry[key] = list(getattr(events, key))
      for i, f in enumerate(faces):
        writer.add(events.tracks[i], (events.step, item.frame, f, events.tracks[i] in events.border,
                                      tuple(size)))
      for k in events.ended:
        writer.finish(k, "lost")
      bar.set_postfix(tracks=len(tracker.tracks), live=len(tracker.live))
    for track in tracker.finish():
      writer.finish(track.id, "end of video")
    if summary.frames and summary.faces == 0 and not unreadable:
      summary.add_failure(InputError("no_face", f"{label}: no face in any of the {summary.frames} "
                                                "frames read"))
      say(f"skipped: {summary.messages[-1]}")
  return summary


# ---- many inputs ---------------------------------------------------------------------------------

def sequences(sources: Sequence[Source]) -> list[tuple[str, object]]:
  """Inputs -> (stem, video) pairs: each video file is one sequence; consecutive image files of
  one folder are the frames of one sequence (in the sorted order `expand_inputs` gives), named
  after the folder."""
  out: list[tuple[str, object]] = []
  group: list[Source] = []

  def flush():
    if group:
      parent = pathlib.Path(group[0].stem).parent
      stem = str(parent) if str(parent) != "." else (group[0].path.parent.name or "frames")
      out.append((stem, list(group)))
      group.clear()

  for s in sources:
    if s.kind == "video" or s.error is not None:
      flush()
      out.append((s.stem, s))
    else:
      if group and group[0].path.parent != s.path.parent:
        flush()
      group.append(s)
  flush()
  return out


def run_video_tracks(inputs: Sequence[str], out_dir: str | os.PathLike, *, reconstructor=None,
                     outputs: Optional[str | Sequence[str]] = None, every: int = 1,
                     smooth: float = DEFAULT_SMOOTH_SIGMA, max_gap: int = DEFAULT_MAX_GAP,
                     progress: bool = True, log: Callable[[str], None] | None = None,
                     **reconstructor_args) -> TracksSummary:
  """`msma-jax reconstruct --tracks`: every video of `inputs` (files, folders, globs; the images of
  a folder are one sequence of frames) tracked and reconstructed into out_dir/<stem>/ (see
  `reconstruct_video`); out_dir/summary.json lists the sequences. Mirrors `batch.run_reconstruct`.
  """
  from msma_jax.inference.reconstruct import Reconstructor
  t0 = time.perf_counter()
  outputs = track_outputs(outputs)
  if every < 1:
    raise ValueError(f"--every must be >= 1, got {every}")
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  rec = reconstructor or Reconstructor(progress=progress, **reconstructor_args)
  sources = expand_inputs(inputs, exclude=[out])
  if not sources:
    raise ValueError("no inputs given")
  summary = TracksSummary()
  say = reporter(log)
  with recorded(summary, out / SUMMARY_FILE, t0):
    for stem, seq in sequences(sources):
      if isinstance(seq, Source):
        if seq.error is not None:
          summary.add_failure(seq.error)
          say(f"skipped: {seq.error}")
          continue
        video, label = seq.path, str(seq.path)
      else:
        video, label = seq, stem
      summary.videos.append(reconstruct_video(
          rec, video, out / stem, every=every, smooth=smooth, max_gap=max_gap, outputs=outputs,
          name=label, progress=progress, log=say))
  return summary
