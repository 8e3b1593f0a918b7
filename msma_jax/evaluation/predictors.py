"""What the benchmarks evaluate: a predictor maps face crops (+ landmarks) to coefficients.

A predictor is any callable

    predict(images [B, 224, 224, 3] float32 RGB in [0, 1], landmarks [B, 68, 2] crop pixels)
        -> Coefficients with batch shape [B]

with an optional `name` attribute (used in reports). The landmarks are the 68 points of the face in
the crop's pixel coordinates (what a detector would give the reconstruction pipeline for its own
alignment); a predictor is free to ignore them.

Built in: `mean` (the mean face, frontal, at the origin: the baseline every method must beat) and
`oracle` (the ground truth of the synthetic benchmark, looked up by image content: the sanity check
that a perfect reconstruction scores 0). Others plug in by name (`register_predictor`) or by import
path ("package.module:factory"); a factory is called as factory(face_model, arg) and returns a
predictor. `checkpoint:PATH` is a trained encoder (a training run or checkpoint folder, through
`msma_jax.Reconstructor`); `fit[:N]` is the mean face fitted to each crop for N steps (test-time
fitting only, no network; default 100).
"""
from __future__ import annotations

import hashlib
import importlib
import pathlib
from typing import Callable, Optional, Protocol

import numpy as np

from configs.fit import RECONSTRUCT_FIT_STEPS
from msma_jax.face_model import Coefficients, FaceModel


class Predictor(Protocol):
  name: str

  def __call__(self, images: np.ndarray, landmarks: np.ndarray) -> Coefficients: ...


class PredictorError(ValueError):
  """An unknown predictor name, an import path that does not load, or a predictor's bad output."""


class MeanFacePredictor:
  """The mean face, frontal, ambient light, at the origin: all coefficients zero."""
  name = "mean face"

  def __init__(self, face_model: FaceModel):
    self.sizes = face_model.sizes

  def __call__(self, images, landmarks) -> Coefficients:
    return Coefficients.zeros(self.sizes, (len(images),))


def image_key(image) -> str:
  """Content hash of one image [H, W, 3] (float32 bytes), the oracle's lookup key."""
  return hashlib.sha1(np.ascontiguousarray(np.asarray(image, np.float32)).tobytes()).hexdigest()


class OraclePredictor:
  """Returns the ground-truth coefficients of images it was built with (matched by content hash).

  images [N, H, W, 3], coefficients with batch shape [N]. An image it has not seen is an error, so
  the oracle cannot silently score a different set.
  """
  name = "oracle (ground truth)"

  def __init__(self, images, coefficients: Coefficients):
    flat = np.asarray(coefficients.to_flat())
    self.sizes = coefficients.sizes
    self.table = {image_key(im): flat[i] for i, im in enumerate(np.asarray(images))}

  def __call__(self, images, landmarks) -> Coefficients:
    rows = []
    for im in np.asarray(images):
      key = image_key(im)
      if key not in self.table:
        raise PredictorError("oracle predictor: an input image is not one of the images it was "
                             "built with")
      rows.append(self.table[key])
    return Coefficients.from_flat(np.stack(rows).astype(np.float32), self.sizes, name="oracle")


class FunctionPredictor:
  """Wraps a plain function predict(images, landmarks) -> Coefficients with a report name."""

  def __init__(self, fn: Callable, name: str):
    self.fn, self.name = fn, name

  def __call__(self, images, landmarks) -> Coefficients:
    return self.fn(images, landmarks)


def checkpoint_predictor(face_model: FaceModel, path: Optional[str]) -> Predictor:
  """`checkpoint:PATH`: the encoder of a training checkpoint (best, else latest), no fitting."""
  if not path:
    raise PredictorError("predictor 'checkpoint' needs a path: checkpoint:RUN_OR_CHECKPOINT_DIR")
  from msma_jax.inference.reconstruct import Reconstructor
  rec = Reconstructor(path, face_model=face_model, fit_steps=0, landmark_steps=0)
  return FunctionPredictor(rec.predict_crops, f"checkpoint {path}")


def deep3d_predictor(face_model: FaceModel, path: Optional[str]) -> Predictor:
  """`deep3d:PATH`: Deep3DFaceRecon's net_recon (`epoch_20.pth`) with its own alignment, no fitting
  (the face model must be its BFM_model_front.mat; the standard landmarks are read from that
  file's folder, which the protocol's --face-model names)."""
  if not path:
    raise PredictorError("predictor 'deep3d' needs a path: deep3d:epoch_20.pth")
  from msma_jax.inference.reconstruct import Reconstructor
  if not face_model.source:
    raise PredictorError("predictor 'deep3d' needs --face-model BFM_model_front.mat (its folder "
                         "holds the standard landmarks of Deep3DFaceRecon's alignment)")
  rec = Reconstructor(face_model=face_model, weights=f"deep3d:{path}", fit_steps=0,
                      landmark_steps=0, align="deep3d",
                      standard_landmarks=pathlib.Path(face_model.source).parent)
  return FunctionPredictor(rec.predict_crops, f"Deep3DFaceRecon {path}")


def fitting_predictor(face_model: FaceModel, steps: Optional[str]) -> Predictor:
  """`fit[:N]`: test-time fitting from the mean face (landmark warm-up, then N full steps)."""
  from msma_jax.inference.reconstruct import Reconstructor
  try:
    n = RECONSTRUCT_FIT_STEPS if steps is None else int(steps)
  except ValueError:
    raise PredictorError(f"predictor 'fit:{steps}': the number of steps must be an integer") from None
  rec = Reconstructor(None, face_model=face_model, fit_steps=n)
  return FunctionPredictor(rec.predict_crops, f"mean face + fitting ({n} steps)")


PredictorFactory = Callable[[FaceModel, Optional[str]], Predictor]
_REGISTRY: dict[str, PredictorFactory] = {
    "mean": lambda fm, arg: MeanFacePredictor(fm),
    "checkpoint": checkpoint_predictor,
    "deep3d": deep3d_predictor,
    "fit": fitting_predictor,
}


def register_predictor(name: str, factory: PredictorFactory) -> None:
  """Makes `--predictor NAME[:ARG]` call factory(face_model, ARG or None)."""
  _REGISTRY[name] = factory


def available_predictors() -> list[str]:
  return sorted(_REGISTRY)


def resolve_predictor(spec, face_model: FaceModel) -> Predictor:
  """A predictor from a spec: a predictor object / callable, "NAME[:ARG]" of a registered factory,
  or "package.module:factory[:ARG]" (imported, then called like a registered factory)."""
  if callable(spec):
    if hasattr(spec, "name"):
      return spec
    return FunctionPredictor(spec, getattr(spec, "__name__", "custom"))
  if not isinstance(spec, str) or not spec:
    raise PredictorError(f"predictor: expected a name or 'module:factory', got {spec!r}")
  name, _, arg = spec.partition(":")
  if name in _REGISTRY:
    return _named(_REGISTRY[name](face_model, arg or None), spec)
  if name == "oracle":
    raise PredictorError("predictor 'oracle' needs the benchmark's ground truth: use the synthetic "
                         "benchmark's --oracle option (or OraclePredictor in Python)")
  if not arg:
    names = ", ".join(available_predictors())
    raise PredictorError(f"predictor {spec!r}: not a registered name ({names}) "
                         "nor 'package.module:factory[:ARG]'")
  attr, _, factory_arg = arg.partition(":")
  try:
    factory = getattr(importlib.import_module(name), attr)
  except (ImportError, AttributeError) as e:
    raise PredictorError(f"predictor {spec!r}: cannot load {name}:{attr} ({e})") from e
  return _named(factory(face_model, factory_arg or None), spec)


def _named(predictor, spec: str) -> Predictor:
  if not callable(predictor):
    raise PredictorError(f"predictor {spec!r}: the factory returned {type(predictor).__name__}, "
                         "not a callable predictor")
  return predictor if hasattr(predictor, "name") else FunctionPredictor(predictor, spec)


def predict_checked(predictor: Predictor, images, landmarks, face_model: FaceModel) -> Coefficients:
  """Calls the predictor and checks its output (sizes, batch, finite); one PredictorError if bad."""
  from msma_jax.face_model import CoefficientError, validate_coefficients
  out = predictor(images, landmarks)
  if not isinstance(out, Coefficients):
    raise PredictorError(f"predictor {predictor.name!r} returned {type(out).__name__}, not Coefficients")
  try:
    validate_coefficients(out, face_model.sizes, name=f"predictor {predictor.name!r}")
  except CoefficientError as e:
    raise PredictorError(str(e)) from e
  if out.batch_shape != (len(images),):
    raise PredictorError(f"predictor {predictor.name!r} returned batch {out.batch_shape} for "
                         f"{len(images)} images")
  return out
