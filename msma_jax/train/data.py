"""Datasets of a training run: prepared folders, synthetic faces built on demand, eval batches."""
from __future__ import annotations

import dataclasses
import logging
import pathlib

import jax
import ml_collections
import numpy as np

log = logging.getLogger(__name__)
SYNTHETIC_NAME = "msma_synthetic_faces"


def _synthetic_options(section):
  from data_pipelines.synthetic import SyntheticOptions
  s = section.get("synthetic", ml_collections.ConfigDict())
  fields = SyntheticOptions.__dataclass_fields__
  return SyntheticOptions(**{k: v for k, v in s.items() if k in fields})


def _check_synthetic_matches(found: pathlib.Path, section, face_model_name: str,
                             image_size: int) -> None:
  """A synthetic dataset rendered earlier into `section.path` must be the one the config asks for:
  a changed option would otherwise silently train on the old faces."""
  from data_pipelines import tfds_builders
  from data_pipelines.synthetic import SyntheticOptions
  meta = tfds_builders.dataset_metadata(found)
  if "options" not in meta:          # a prepared photo dataset: nothing to compare
    return
  fields = SyntheticOptions.__dataclass_fields__
  stored = dataclasses.asdict(SyntheticOptions(
      **{k: v for k, v in dict(meta["options"]).items() if k in fields}))
  wanted = dataclasses.asdict(_synthetic_options(section))
  wanted.update(seed=int(section.synthetic.seed), crop_size=int(image_size),
                face_model=str(face_model_name))
  stored.update(seed=meta.get("seed"), crop_size=meta.get("crop_size"),
                face_model=meta.get("face_model"))
  diff = [k for k in wanted if stored.get(k) != wanted[k]]
  if diff:
    k = diff[0]
    raise tfds_builders.DatasetError(
        f"{found}: rendered with other synthetic settings ({k} {stored.get(k)!r} there, "
        f"{wanted[k]!r} in the config); delete the folder to render it again, or point the "
        "config's path elsewhere")


def ensure_dataset(section, face_model_name: str, image_size: int) -> pathlib.Path:
  """The prepared dataset of a config section (`config.data` or `config.eval`).

  With `synthetic_if_missing`, a missing dataset is rendered (msma_synthetic_faces) into
  `section.path` first — by process 0, the others wait at a barrier.
  """
  from data_pipelines import tfds_builders
  path = pathlib.Path(section.path).expanduser()
  built = path / SYNTHETIC_NAME          # where a synthetic build under `path` lands
  for candidate in (path, built):
    try:
      found = tfds_builders.resolve_dataset_dir(candidate)
    except tfds_builders.DatasetError:
      continue
    if section.get("synthetic_if_missing", False):
      _check_synthetic_matches(found, section, face_model_name, image_size)
    return found
  if not section.get("synthetic_if_missing", False):
    tfds_builders.resolve_dataset_dir(path)   # raises the error naming the folder
  synth = section.synthetic
  if jax.process_index() == 0:
    log.info("building synthetic dataset %s (%d faces)", path, synth.num_examples)
    builder = tfds_builders.MsmaSyntheticFaces(
        num_examples=int(synth.num_examples), seed=int(synth.seed), face_model=face_model_name,
        crop_size=int(image_size), options=_synthetic_options(section), data_dir=str(path))
    tfds_builders.build(builder)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"synthetic dataset {path}")
  return tfds_builders.resolve_dataset_dir(built)


def eval_batches(path: pathlib.Path, eval_config, image_size: int) -> list[dict]:
  """The whole held-out split as host batches (no shuffling, no augmentation), kept in memory."""
  from data_pipelines.pipeline import make_dataset
  cfg = ml_collections.ConfigDict({
      "split": eval_config.get("split", "train"), "shuffle": False, "num_epochs": 1, "seed": 0,
      "global_batch_size": int(eval_config.batch_size),
      "augment": {"enabled": False}})
  ds = make_dataset(str(path), cfg, image_size=image_size)   # resized if stored at another size
  batches = []
  for b in ds:
    b = dict(b)
    b["image"] = b["image"].astype(np.float32) / 255.0
    b["skin_mask"] = b["skin_mask"].astype(np.float32) / 255.0
    batches.append(b)
  if not batches:
    raise ValueError(f"{path}: the eval split holds fewer faces than one batch of "
                     f"{eval_config.batch_size}")
  return batches
