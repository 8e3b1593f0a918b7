"""Another project's trained weights as the reconstruction encoder (`--weights KIND:PATH`).

    deep3d:PATH   Deep3DFaceRecon's `epoch_*.pth` (its `net_recon`: a ResNet-50 with linear heads
                  predicting BFM coefficients id 80 / exp 64 / tex 80, angles, SH light, translation)
                  -> the `deep3d_r50` variant; it reads 224-px crops of Deep3DFaceRecon's alignment
                  (`data_pipelines.deep3d_alignment`) and needs the BFM face model it was trained
                  with (`--face-model BFM_model_front.mat`).

`--checkpoint` keeps meaning an msma-jax training run; training starts from these weights through
`config.init.source` (msma_jax/train/init.py) instead.
"""
from __future__ import annotations

import pathlib

from configs.model import get_model_config
from msma_jax.face_model import BFM_SIZES, FaceModel
from msma_jax.models import WeightImportError, build_model
from msma_jax.models.torch_weights import load_deep3d_checkpoint, load_torch_file

WEIGHT_KINDS = ("deep3d",)
DEEP3D_VARIANT = "deep3d_r50"
DEEP3D_CROP = 224


class WeightsError(ValueError):
  """A --weights value that is malformed, names a missing file, or does not fit the face model."""


def parse_weights(spec: str) -> tuple[str, pathlib.Path]:
  """"KIND:PATH" -> (kind, path); raises WeightsError for another form or kind."""
  kind, sep, path = str(spec).partition(":")
  if not sep or kind not in WEIGHT_KINDS or not path:
    raise WeightsError(f"--weights {spec!r}: expected KIND:PATH with KIND one of "
                       f"{', '.join(WEIGHT_KINDS)} (e.g. deep3d:checkpoints/epoch_20.pth)")
  return kind, pathlib.Path(path).expanduser()


def load_weights(spec: str, face_model: FaceModel):
  """The encoder `spec` names, with its weights, for `face_model`: (model, crop size in px).
  Errors are one WeightsError line naming the file and what differs."""
  kind, path = parse_weights(spec)
  if not path.is_file():
    raise WeightsError(f"{path}: weights file not found (--weights {kind}:PATH)")
  sizes = tuple(face_model.sizes)[:3]
  want = tuple(BFM_SIZES)[:3]
  if sizes != want:
    raise WeightsError(
        f"{path}: Deep3DFaceRecon's net_recon predicts BFM coefficients (id/exp/tex "
        f"{'/'.join(map(str, want))}), face model {face_model.name!r} has "
        f"{'/'.join(map(str, sizes))}: give --face-model BFM_model_front.mat (its BFM folder)")
  model = build_model(get_model_config(DEEP3D_VARIANT), face_model)
  try:
    load_deep3d_checkpoint(model, load_torch_file(path))
  except WeightImportError as e:
    text = str(e)
    raise WeightsError(text if text.startswith(str(path)) else f"{path}: {text}") from e
  model.eval()
  return model, DEEP3D_CROP
