"""`Reconstructor`: pictures in, `FaceResult`s out (what `msma-jax reconstruct` runs).

picture ──detect (dlib) / landmark file──▶ 68 landmarks per face, largest face first
        ──align─────────────────────────▶ crops (fit size for fitting, the encoder's size)
        ──encoder (checkpoint) or mean face──▶ initial coefficients          (batched, jitted)
        ──test-time fitting (optional)───▶ coefficients                      (batched, jitted)
        ──describe─────────────────────▶ landmarks in picture pixels, mesh, colours, pose

Faces are processed in batches of up to `batch_size`, padded to the next power of two by repeating
a face (so at most log2(batch_size) + 1 shapes are ever compiled). `reconstruct_many` batches faces
across pictures and yields each picture's results as soon as its batch is done.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Iterable, Iterator, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs.fit import (RECONSTRUCT_FIT_STEPS, RECONSTRUCT_LANDMARK_STEPS,
                         get_reconstruct_fit_config)
from data_pipelines.alignment import CROP_SIZE, AlignTransform, warp_to_crop
from data_pipelines.deep3d_alignment import LM3D_FILE, Deep3DAligner
from data_pipelines.faces import FacePreprocessor, SkipImage
from data_pipelines.landmarks import find_landmark_file
from data_pipelines.skin import skin_probability
from msma_jax import camera as cam
from msma_jax.face_model import Coefficients, FaceModel, load_face_model
from msma_jax.face_model.io import with_normals
from msma_jax.inference.fit import CoefficientFitter, projected_landmarks
from msma_jax.inference.inputs import InputError, InputItem, read_picture, to_uint8_rgb
from msma_jax.inference.result import FaceResult
from msma_jax.inference.views import Views, scaled, vertex_colours
from msma_jax.inference.weights import DEEP3D_CROP, load_weights

ALIGN_MODES = ("auto", "standard", "deep3d")


@dataclasses.dataclass
class _Face:
  """A face ready for the batch: crops and landmarks in crop pixels."""
  item: int                      # index of its picture in the current batch
  face_index: int
  transform: AlignTransform      # picture -> fit crop
  crop: np.ndarray               # uint8 [F, F, 3] at the fit size
  model_crop: Optional[np.ndarray]   # uint8 [S, S, 3] at the encoder's size (None without encoder)
  landmarks: np.ndarray          # [68, 2] fit-crop pixels
  input_landmarks: np.ndarray    # [68, 2] picture pixels
  origin: str
  score: float
  faces_found: int = 1           # faces found in the picture before `select` / max_faces


def fit_quality(landmarks: np.ndarray, input_landmarks: np.ndarray, terms: dict, i: int,
                config: ml_collections.ConfigDict) -> dict:
  """How well face i's reported landmarks [68, 2] match the points it was fitted to [68, 2]
  (picture pixels): {"landmark_nme": mean distance / outer-ocular distance (points 36, 45),
  "quality": "good" | "fair" | "poor" | "failed"} by config.quality_nme (good, fair) limits;
  "failed" when a loss term is not finite; a face whose fit the guard reverted is at best "fair"."""
  ocular = max(float(np.linalg.norm(input_landmarks[45] - input_landmarks[36])), 1e-6)
  nme = float(np.linalg.norm(landmarks - input_landmarks, axis=-1).mean()) / ocular
  good, fair = config.quality_nme
  finite = np.isfinite(nme) and all(np.isfinite(v[i]) for v in terms.values())
  if not finite:
    quality = "failed"
  elif nme <= good and not terms.get("kept_earlier_step", np.zeros(i + 1))[i]:
    quality = "good"
  else:
    quality = "fair" if nme <= fair else "poor"
  return {"landmark_nme": nme if np.isfinite(nme) else None, "quality": quality}


def _bucket(n: int, cap: int) -> int:
  b = 1
  while b < n:
    b *= 2
  return min(b, max(cap, n))


def _pad(arrays: np.ndarray, size: int) -> np.ndarray:
  if len(arrays) == size:
    return arrays
  return np.concatenate([arrays, np.repeat(arrays[-1:], size - len(arrays), axis=0)])


def _select_device(device: Optional[str]):
  if device is None:
    return None
  kind = {"gpu": "gpu", "cuda": "gpu", "tpu": "tpu", "cpu": "cpu"}.get(str(device).lower())
  if kind is None:
    raise ValueError(f"--device must be cpu, gpu or tpu, got {device!r}")
  try:
    devices = jax.devices(kind)
  except RuntimeError as e:
    raise ValueError(f"--device {device}: no {kind.upper()} is available to JAX "
                     f"(backend {jax.default_backend()}; install the matching jax build)") from e
  return devices[0]


class Reconstructor:
  """Reconstructs faces from pictures with a trained encoder and/or test-time fitting.

  checkpoint: a training run directory / checkpoint folder (`msma_jax.train.checkpoint`), or None to
    start from the mean face (fitting-only mode: useful before any training).
  face_model: "embedded", a face model file, or a `FaceModel`; must be the checkpoint's.
  fit_steps: full test-time fitting steps (photometric + landmarks + regularisers); default 0 with a
    checkpoint, configs/fit.py's RECONSTRUCT_FIT_STEPS without. landmark_steps: landmark-only
    warm-up steps run before them (cheap); default RECONSTRUCT_LANDMARK_STEPS when fitting or without a checkpoint, else 0.
  fit_config: a `configs.fit.get_fit_config()` to override the learning rate, loss weights or
    groups (default: `get_reconstruct_fit_config()`, its landmark weight scaled by
    (224 / fit_size)² as configs/loss.py prescribes).
  fit_size: crop size (px) fitting renders at; the encoder gets crops of its training size.
  batch_size: faces per batch. detector: "cascade" (HOG, then the CNN and rotated copies where
    HOG finds nothing: `data_pipelines.detection.FaceDetector`) | "hog" | "cnn"; upsample: dlib
    upsampling, or "auto" (0, then 1 when no face is found: fast for photos of people, still finds
    faces of ~40 px); select: which faces a picture keeps when several are found: "all" (largest
    first), "largest", "central"; max_faces: after that, at most this many, largest first (None =
    all). use_landmark_files: read `.pts`/`.txt`
    files beside pictures. which: "best" or "latest" checkpoint. device: "cpu" | "gpu" | "tpu" |
    None (JAX's default). progress: show fitting progress bars. keep_photo: results keep a reference
    to the picture (needed for overlays and textures).
  encoder / encoder_size: instead of a checkpoint, an encoder module already in memory (e.g. built
    by `msma_jax.models.build_model`) and the crop size it expects; it is used in inference mode.
  weights: instead of a checkpoint, another project's weights, "deep3d:epoch_20.pth"
    (Deep3DFaceRecon's net_recon; `msma_jax.inference.weights`), with a BFM face model.
  align: how faces are cut out: "standard" (scale and translation onto the face model's projected
    mean five points), "deep3d" (Deep3DFaceRecon's `align_img`: `data_pipelines.deep3d_alignment`;
    224-px crops) or "auto" (deep3d with Deep3DFaceRecon weights, else standard).
    standard_landmarks: for deep3d, `similarity_Lm3D_all.mat` or the BFM folder holding it
    (default: the folder of the face model file).
  normals: vertex normals, "auto" | "area" | "point_buf" (`face_model.io.with_normals`).
  """

  def __init__(self, checkpoint: str | os.PathLike | None = None,
               face_model: str | os.PathLike | FaceModel = "embedded", *,
               fit_steps: Optional[int] = None, landmark_steps: Optional[int] = None,
               fit_config: Optional[ml_collections.ConfigDict] = None, fit_size: int = 224,
               batch_size: int = 8, detector: str = "cascade", upsample: int | str = "auto",
               select: str = "all", max_faces: Optional[int] = None, min_score: float = 0.3, min_side: int = 32,
               use_landmark_files: bool = True, which: str = "best", device: Optional[str] = None,
               progress: bool = False, keep_photo: bool = True, encoder=None,
               encoder_size: int = 224, weights: Optional[str] = None, align: str = "auto",
               standard_landmarks: str | os.PathLike | None = None, normals: str = "auto"):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if fit_size < 32:
      raise ValueError(f"fit_size must be >= 32 px, got {fit_size}")
    self.device = _select_device(device)
    with self._on_device():
      self.face_model = with_normals(face_model if isinstance(face_model, FaceModel)
                                     else load_face_model(face_model), normals)
      if self.device is not None:
        self.face_model = jax.device_put(self.face_model, self.device)
    self.batch_size, self.fit_size = int(batch_size), int(fit_size)
    self.progress, self.keep_photo = progress, keep_photo
    self.checkpoint, self.model, self.meta = None, None, {}
    self.model_size = None
    self.weights = weights
    if sum(x is not None for x in (checkpoint, encoder, weights)) > 1:
      raise ValueError("give one of a checkpoint, weights (--weights) or an encoder")
    if checkpoint is not None:
      self._load_encoder(checkpoint, which)
    elif weights is not None:
      with self._on_device():
        model, size = load_weights(weights, self.face_model)
      self._set_encoder(model, size)
    elif encoder is not None:
      encoder.eval()
      self._set_encoder(encoder, int(encoder_size))
    fitting = bool(fit_steps) if fit_steps is not None else self.model is None
    self.fit_steps = int(fit_steps) if fit_steps is not None else (
        RECONSTRUCT_FIT_STEPS if self.model is None else 0)
    self.landmark_steps = int(landmark_steps) if landmark_steps is not None else (
        RECONSTRUCT_LANDMARK_STEPS if (fitting or self.model is None) else 0)
    if self.fit_steps < 0 or self.landmark_steps < 0:
      raise ValueError("fit_steps and landmark_steps must be >= 0")
    if fit_config is not None:
      config = ml_collections.ConfigDict(fit_config.to_dict())
    else:
      config = get_reconstruct_fit_config()
      # the landmark weight is set for 224 px crops (configs/loss.py): keep its balance with the
      # photometric term at other fit sizes
      config.loss.landmark *= (CROP_SIZE / self.fit_size) ** 2
    config.steps, config.landmark_steps = self.fit_steps, self.landmark_steps
    self.fit_config = config          # fit_steps / landmark_steps may be changed between calls
    self.camera = cam.Camera.for_face_model(self.face_model, self.fit_size)
    self.fitter = CoefficientFitter(self.face_model, self.camera, config)
    self.views = Views(self.face_model)
    if upsample != "auto" and (not isinstance(upsample, int) or upsample < 0):
      raise ValueError(f"upsample must be 'auto' or an integer >= 0, got {upsample!r}")
    self.upsample = upsample
    self.align = self._align_mode(align, standard_landmarks)
    aligner = None
    if self.align == "deep3d":
      aligner = Deep3DAligner(standard_landmarks if standard_landmarks is not None
                              else pathlib.Path(self.face_model.source).parent)
    self.preprocessor = FacePreprocessor(
        detector, max_faces=max_faces, min_side=min_side, crop_size=self.fit_size,
        use_landmark_files=use_landmark_files, face_model=self.face_model,
        upsample=0 if upsample == "auto" else int(upsample), min_score=min_score, select=select,
        aligner=aligner)

    contour = self.fitter.contour      # the landmarks reported are the ones the fit matched

    def describe(fm, coeffs, camera):
      vertices, _ = fm.decode(coeffs)
      return (projected_landmarks(fm, coeffs, camera, contour=contour), vertices,
              vertex_colours(fm, coeffs))

    self._describe = jax.jit(describe, static_argnums=2)

  # ---- setup -------------------------------------------------------------------------------------
  def _align_mode(self, align: str, standard_landmarks) -> str:
    if align not in ALIGN_MODES:
      raise ValueError(f"align must be one of {', '.join(ALIGN_MODES)}, got {align!r}")
    if align == "auto":
      align = "deep3d" if self.weights is not None else "standard"
    if align != "deep3d":
      return align
    if self.fit_size != DEEP3D_CROP or (self.model_size or DEEP3D_CROP) != DEEP3D_CROP:
      raise ValueError(f"--align deep3d cuts {DEEP3D_CROP}-px crops: --fit-size (and the "
                       f"encoder's crop) must be {DEEP3D_CROP}")
    if standard_landmarks is None and not self.face_model.source:
      raise ValueError(f"--align deep3d reads Deep3DFaceRecon's {LM3D_FILE}: give "
                       "--standard-landmarks, or a --face-model file in its BFM folder")
    return align

  def _on_device(self):
    import contextlib
    return jax.default_device(self.device) if self.device is not None else contextlib.nullcontext()

  def _load_encoder(self, checkpoint, which: str) -> None:
    from msma_jax.train.checkpoint import load_model
    with self._on_device():
      model, meta = load_model(checkpoint, which=which, face_model=self.face_model)
    self.checkpoint, self.meta = pathlib.Path(checkpoint), meta
    self._set_encoder(model, int(meta.get("image_size", 224)))

  def _set_encoder(self, model, size: int) -> None:
    from flax import nnx
    sizes = tuple(getattr(model, "sizes", self.face_model.sizes))
    if sizes != tuple(self.face_model.sizes):
      raise ValueError(f"encoder predicts coefficient sizes {sizes}, face model "
                       f"{self.face_model.name!r} has {tuple(self.face_model.sizes)}")
    self.model, self.model_size = model, size
    graphdef, state = nnx.split(model)
    if self.device is not None:
      state = jax.device_put(state, self.device)
    self._model_state = state
    self._predict = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))

  @property
  def init_name(self) -> str:
    if self.model is None:
      return "mean face"
    if self.weights:
      return f"weights {self.weights}"
    return f"encoder {self.checkpoint}" if self.checkpoint else "encoder"

  # ---- pictures -> faces -------------------------------------------------------------------------
  def _find(self, image: np.ndarray, name: str, landmark_file, landmarks):
    pre = self.preprocessor
    try:
      return pre.find_landmarks(image, name, landmark_file, landmarks)
    except SkipImage as e:
      # the cascade upsamples by itself; plain HOG gets a second, upsampled search
      if not (e.reason == "no_face" and self.upsample == "auto" and pre.detector_kind == "hog"):
        raise
    det = pre.detector
    det.upsample = 1                      # small faces: search the image at twice its size
    try:
      return pre.find_landmarks(image, name, landmark_file, landmarks)
    finally:
      det.upsample = 0

  def prepare(self, image: np.ndarray, *, name: str = "<image>", item: int = 0,
              landmark_file=None, landmarks=None) -> list[_Face]:
    """Detects (or takes `landmarks` [N, 68, 2] picture pixels / a landmark file) and aligns faces.

    Raises InputError (reason and one line naming the picture) when nothing usable is found.
    """
    h, w = image.shape[:2]
    pre = self.preprocessor
    try:
      if min(h, w) < pre.min_side:
        raise SkipImage("too_small", f"{name}: image too small ({w}x{h}; the shorter side must be "
                        f"at least {pre.min_side} px)")
      found, n_found = self._find(image, name, landmark_file, landmarks)
      faces = []
      for i, (lm, origin, score, _) in enumerate(found):
        try:
          transform = pre.aligner.fit(found[i].alignment_landmarks, (h, w))
        except ValueError as e:
          raise SkipImage("bad_alignment", f"{name}: face {i}: {e}") from e
        crop = warp_to_crop(image, transform)
        model_crop = None
        if self.model is not None:
          model_crop = (crop if self.model_size == self.fit_size else
                        warp_to_crop(image, scaled(transform, self.model_size / self.fit_size)))
        faces.append(_Face(item, i, transform, crop, model_crop,
                           transform.to_crop(lm).astype(np.float32),
                           np.asarray(lm, np.float64), origin, score, n_found))
      return faces
    except SkipImage as e:
      raise InputError(e.reason, str(e)) from e

  # ---- faces -> coefficients ---------------------------------------------------------------------
  def _predict_init(self, model_crops: np.ndarray) -> Coefficients:
    """uint8 [B, S, S, 3] crops at the encoder's size -> coefficients [B] (mean face w/o encoder)."""
    if self.model is None:
      return self.face_model.zero_coefficients((len(model_crops),))
    x = jnp.asarray(model_crops, jnp.float32) / 255.0
    return self._predict(self._model_state, x)

  def solve(self, crops: np.ndarray, landmarks: np.ndarray,
            model_crops: Optional[np.ndarray] = None) -> tuple[Coefficients, dict]:
    """Coefficients for aligned faces: crops uint8 [N, F, F, 3] at the fit size, landmarks
    [N, 68, 2] crop pixels, model_crops uint8 [N, S, S, 3] at the encoder's size (default: crops
    resized). Returns (coefficients with batch [N], per-face fit loss terms {name: [N]}; {} when
    nothing is fitted)."""
    n = len(crops)
    if model_crops is None and self.model is not None:
      import cv2
      s = self.model_size
      model_crops = np.stack([c if c.shape[0] == s else cv2.resize(c, (s, s),
                                                                   interpolation=cv2.INTER_AREA)
                              for c in crops])
    outs, face_terms = [], []
    with self._on_device():
      for start in range(0, n, self.batch_size):
        stop = min(n, start + self.batch_size)
        b = _bucket(stop - start, self.batch_size)
        init = self._predict_init(_pad(model_crops[start:stop], b) if self.model is not None
                                  else np.zeros((b,)))
        coeffs = init
        if self.fit_steps > 0 or self.landmark_steps > 0:
          batch = {"landmarks": jnp.asarray(_pad(landmarks[start:stop], b), jnp.float32)}
          if self.fit_steps > 0:
            c = _pad(crops[start:stop], b)
            batch["image"] = jnp.asarray(c, jnp.float32) / 255.0
            batch["skin_mask"] = jnp.asarray(np.stack([skin_probability(x) for x in c]),
                                             jnp.float32)
          coeffs, terms = self.fitter.fit(init, batch, steps=self.fit_steps,
                                          landmark_steps=self.landmark_steps,
                                          progress=self.progress,
                                          description=f"fitting {stop - start} face(s)")
          face_terms.append({k: np.asarray(v)[: stop - start] for k, v in terms.items()})
        outs.append(jax.tree.map(lambda a: np.asarray(a)[: stop - start], coeffs))
    coeffs = jax.tree.map(lambda *a: np.concatenate(a), *outs)
    terms = ({k: np.concatenate([t[k] for t in face_terms]) for k in face_terms[0]}
             if face_terms else {})
    return coeffs, terms

  def predict_crops(self, crops, landmarks, *, realign: bool = True) -> Coefficients:
    """The evaluation predictor interface: crops [B, H, H, 3] float in [0, 1] (or uint8), landmarks
    [B, 68, 2] crop pixels -> Coefficients [B] describing the faces in these crops.

    realign: align each crop by its landmarks the way photos are aligned (crops framed otherwise,
    e.g. a benchmark's renders, then look like the encoder's training crops), reconstruct there and
    move the coefficients back to the given crop's framing (`framing.reframe`).
    """
    import cv2

    from msma_jax.inference.framing import reframe
    crops = np.asarray(crops)
    if crops.dtype != np.uint8:
      crops = np.round(np.clip(crops, 0.0, 1.0) * 255.0).astype(np.uint8)
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2]:
      raise ValueError(f"predict_crops: expected square crops [B, H, H, 3], got {crops.shape}")
    f = self.fit_size
    landmarks = np.asarray(landmarks, np.float64) * (f / crops.shape[1])
    if crops.shape[1] != f:
      crops = np.stack([cv2.resize(c, (f, f), interpolation=cv2.INTER_AREA
                                   if crops.shape[1] > f else cv2.INTER_LINEAR) for c in crops])
    transforms = [self.preprocessor.aligner.fit(lm, (f, f)) if realign else None
                  for lm in landmarks]
    aligned = np.stack([warp_to_crop(c, t) if t is not None else c
                        for c, t in zip(crops, transforms)])
    aligned_lm = np.stack([t.to_crop(lm) if t is not None else lm
                           for lm, t in zip(landmarks, transforms)]).astype(np.float32)
    model_crops = None
    if self.model is not None:
      s = self.model_size
      model_crops = np.stack([c if s == f else cv2.resize(
          c, (s, s), interpolation=cv2.INTER_AREA if f > s else cv2.INTER_LINEAR) for c in aligned])
    coeffs, _ = self.solve(aligned, aligned_lm, model_crops)
    if realign:
      faces = [reframe(self.face_model, jax.tree.map(lambda a: a[i], coeffs), t)
               for i, t in enumerate(transforms)]
      coeffs = jax.tree.map(lambda *a: np.stack(a), *faces)
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), coeffs)

  def _results(self, faces: list[_Face], pictures: list[tuple[str, np.ndarray]]
               ) -> list[FaceResult]:
    crops = np.stack([f.crop for f in faces])
    landmarks = np.stack([f.landmarks for f in faces])
    model_crops = (np.stack([f.model_crop for f in faces]) if self.model is not None else None)
    coeffs, terms = self.solve(crops, landmarks, model_crops)
    out = []
    with self._on_device():
      for start in range(0, len(faces), self.batch_size):
        stop = min(len(faces), start + self.batch_size)
        b = _bucket(stop - start, self.batch_size)
        chunk = jax.tree.map(lambda a: jnp.asarray(_pad(a[start:stop], b)), coeffs)
        lm, vertices, colours = (np.asarray(a)[: stop - start]
                                 for a in self._describe(self.face_model, chunk, self.camera))
        for j, f in enumerate(faces[start:stop]):
          name, photo = pictures[f.item]
          one = jax.tree.map(lambda a: np.asarray(a[start + j]), coeffs)
          picture_lm = f.transform.to_image(lm[j])
          fit = {"init": self.init_name, "landmark_steps": self.landmark_steps,
                 "steps": self.fit_steps,
                 "terms": {k: float(v[start + j]) for k, v in terms.items()},
                 **fit_quality(picture_lm, f.input_landmarks, terms, start + j,
                               self.fit_config)}
          out.append(FaceResult(
              source=name, face_index=f.face_index, image_size=tuple(photo.shape[:2]),
              coefficients=one, landmarks=picture_lm,
              input_landmarks=f.input_landmarks, transform=f.transform, crop=f.crop,
              vertices=vertices[j], colours=colours[j], origin=f.origin, score=f.score,
              faces_found=f.faces_found,
              fit=fit,
              photo=photo if self.keep_photo else None, views=self.views))
    return out

  # ---- public ------------------------------------------------------------------------------------
  def reconstruct(self, image_or_path, *, landmarks=None, name: Optional[str] = None
                  ) -> list[FaceResult]:
    """All faces of one picture (largest first).

    image_or_path: a file path, or an RGB array [H, W, 3] (uint8, or float in [0, 1]).
    landmarks: optional [68, 2] or [N, 68, 2] picture pixels (project convention) instead of
    detection. Raises InputError (one line naming the picture) for unreadable pictures, pictures
    without a face, or unusable landmarks.
    """
    item = self._item(image_or_path, name)
    if item.error is not None:
      raise item.error
    faces = self._prepare_item(item, 0, landmarks)
    return self._results(faces, [(item.name, item.image)])

  def _item(self, image_or_path, name: Optional[str]) -> InputItem:
    if isinstance(image_or_path, (str, os.PathLike)):
      path = pathlib.Path(image_or_path)
      try:
        image = read_picture(path)
      except InputError as e:
        return InputItem(name or str(path), path.stem, path=path, error=e)
      return InputItem(name or str(path), path.stem, image=image, path=path)
    label = name or "<image>"
    return InputItem(label, label, image=to_uint8_rgb(image_or_path, label))

  def _prepare_item(self, item: InputItem, index: int, landmarks=None) -> list[_Face]:
    lm_file = None
    if (landmarks is None and item.path is not None and item.frame is None
        and self.preprocessor.use_landmark_files):
      lm_file = find_landmark_file(item.path)
    return self.prepare(item.image, name=item.name, item=index, landmark_file=lm_file,
                        landmarks=landmarks)

  def reconstruct_many(self, items: Iterable[InputItem | str | os.PathLike | np.ndarray]
                       ) -> Iterator[tuple[InputItem, list[FaceResult] | InputError]]:
    """Yields (item, results or InputError) for each picture, in input order, batching faces across
    pictures. Paths and arrays are accepted as items too. A picture that fails to read, has no face
    or fails in reconstruction yields its InputError; the others go on."""
    pending: list[tuple[InputItem, list[_Face] | InputError]] = []
    n_faces = 0

    def flush():
      faces, pictures = [], []
      for k, (it, fs) in enumerate(pending):
        pictures.append((it.name, it.image))
        if not isinstance(fs, InputError):
          faces.extend(dataclasses.replace(f, item=k) for f in fs)
      try:
        results = self._results(faces, pictures) if faces else []
        error = None
      except Exception as e:          # a failed batch loses its pictures only, reported by name
        results, error = [], e
      by_item: dict[int, list[FaceResult]] = {}
      for f, r in zip(faces, results):
        by_item.setdefault(f.item, []).append(r)
      for k, (it, fs) in enumerate(pending):
        if isinstance(fs, InputError):
          yield it, fs
        elif error is not None:
          yield it, InputError("failed", f"{it.name}: reconstruction failed "
                                         f"({type(error).__name__}: {error})")
        else:
          yield it, by_item.get(k, [])
      pending.clear()

    for it in items:
      if not isinstance(it, InputItem):
        it = self._item(it, None)
      if it.error is not None:
        entry: list[_Face] | InputError = it.error
      else:
        try:
          entry = self._prepare_item(it, len(pending))
        except InputError as e:
          entry = e
      pending.append((it, entry))
      if not isinstance(entry, InputError):
        n_faces += len(entry)
      if n_faces >= self.batch_size:
        yield from flush()
        n_faces = 0
    if pending:
      yield from flush()
