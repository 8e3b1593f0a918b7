"""The Grain training pipeline: prepared ArrayRecord dataset -> augmented, batched host arrays.

    source (ArrayRecord, random access) -> attach record index -> this process's shard
      -> seeded shuffle (reshuffled every epoch) -> repeat -> decode + augment (seeded per element)
      -> batch (drop remainder) -> worker processes (mp_prefetch) -> iterator

Everything before the iterator is a `grain.MapDataset`, so element i of the stream is a pure
function of (dataset, config, seed, i): the output does not depend on the number of workers, and
the iterator's state (`get_state`/`set_state`, or an Orbax checkpoint through grain's
`CheckpointSave`/`CheckpointRestore`, see `checkpoint_args`) resumes exactly.

Batch format (one process's share of the global batch, B = global_batch_size / process_count):

=============  =====================  ==============================================================
key            shape, dtype           meaning
=============  =====================  ==============================================================
image          [B, S, S, 3] float32   RGB in [0, 1], row 0 at the top (black outside the photo)
landmarks      [B, 68, 2] float32     pixels of `image` (x right, y down, centres +0.5), iBUG order
skin_mask      [B, S, S] float32      P(skin) in [0, 1]; 0 where augmentation left the photo
valid          [B] float32            1 for real examples (0 would mark padding; none is produced)
index          [B] int64              record index in the prepared dataset
flipped        [B] bool               the example was mirrored
to_original    [B, 2, 3] float32      affine: augmented-crop pixels -> original-photo pixels
coeffs         [B, K] float32         synthetic datasets only: ground-truth flat coefficients of the
                                      un-augmented render (turn geometric augmentation off to use
                                      them as labels)
=============  =====================  ==============================================================
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import cv2
import grain
import numpy as np

from data_pipelines.augment import (AugmentOptions, apply_geometry, colour_jitter,
                                    sample_geometry)
from data_pipelines.images import decode_crop

_SHARD_SEED_STRIDE = 1_000_003


@dataclasses.dataclass
class _WithIndex:
  """Attaches the record index (a picklable MapWithIndex callable). Repeated epochs ask for indices
  past the end (epoch * n + i), hence the modulo."""
  num_records: int

  def __call__(self, index: int, record: dict) -> dict:
    record = dict(record)
    record["_index"] = index % self.num_records
    return record


class DecodeAndAugment(grain.transforms.RandomMap):
  """Record (encoded bytes + arrays) -> training example (the batch format above, unbatched), with
  `image` and `skin_mask` still uint8: `ToFloat` converts whole batches after they have crossed
  from the worker processes (4x fewer bytes through shared memory)."""

  def __init__(self, options: AugmentOptions, keep_coeffs: bool = True,
               image_size: int | None = None):
    self.options = options
    self.keep_coeffs = keep_coeffs
    self.image_size = image_size      # None: crops keep the dataset's size

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    image = decode_crop(record["image"], 3)
    mask = record["skin_mask"]
    mask = decode_crop(mask, 1) if isinstance(mask, bytes) else np.asarray(mask, np.uint8)
    size = image.shape[0]
    landmarks = np.asarray(record["landmarks"], np.float32)
    opts = self.options
    flipped = False
    aug = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if opts.geometric:
      aug, flipped = sample_geometry(rng, opts, size)
      image, mask, landmarks = apply_geometry(image, mask, landmarks, aug, flipped)
    if self.image_size and self.image_size != size:
      # A dataset prepared at another crop size (e.g. 224 px photos for a 64 px run): the resize
      # is one more scale of the crop, so landmarks and to_original follow it.
      f = self.image_size / size
      interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
      image = cv2.resize(image, (self.image_size, self.image_size), interpolation=interp)
      mask = cv2.resize(mask, (self.image_size, self.image_size), interpolation=interp)
      landmarks = (landmarks * f).astype(np.float32)
      aug = aug * f
    img = colour_jitter(image, rng, opts)
    align = np.asarray(record.get("align", (1.0, 0.0, 0.0)), np.float64)
    # original -> crop: s x + t; crop -> augmented: A y + b.  to_original = inverse of the composite.
    full = np.concatenate([aug[:, :2] * align[0], (aug[:, :2] @ align[1:] + aug[:, 2])[:, None]], 1)
    inv_a = np.linalg.inv(full[:, :2])
    to_original = np.concatenate([inv_a, (-inv_a @ full[:, 2])[:, None]], 1)
    out = {
        "image": img,
        "landmarks": landmarks,
        "skin_mask": mask,
        "valid": np.float32(1.0),
        "index": np.int64(record["_index"]),
        "flipped": np.bool_(flipped),
        "to_original": to_original.astype(np.float32),
    }
    if self.keep_coeffs and "coeffs" in record:
      out["coeffs"] = np.asarray(record["coeffs"], np.float32)
    return out


class ToFloat(grain.transforms.Map):
  """uint8 `image` / `skin_mask` (batched or not) -> float32 in [0, 1]; other keys unchanged."""

  def map(self, batch: dict) -> dict:
    out = dict(batch)
    for k in ("image", "skin_mask"):
      if out[k].dtype == np.uint8:
        out[k] = np.multiply(out[k], np.float32(1.0 / 255.0), dtype=np.float32)
    return out


def process_shard() -> grain.sharding.ShardOptions:
  """This JAX process's shard (grain's ShardByJaxProcess; index 0 of 1 on a single host)."""
  return grain.sharding.ShardByJaxProcess(drop_remainder=True)


def shard_dataset(ds: grain.MapDataset, shard: grain.sharding.ShardOptions) -> grain.MapDataset:
  """Strided shard `shard.shard_index` of `shard.shard_count` (disjoint; with drop_remainder the
  trailing len % count records are left out so every shard has the same length)."""
  n = len(ds)
  if shard.drop_remainder:
    ds = ds[: n - n % shard.shard_count]
  return ds[shard.shard_index::shard.shard_count]


def _cfg_get(cfg, key, default):
  try:
    return cfg[key] if key in cfg else default
  except TypeError:
    return getattr(cfg, key, default)


def data_shards_of_process(config, shard: grain.sharding.ShardOptions
                           ) -> tuple[list[grain.sharding.ShardOptions], int]:
  """The data shards this process reads, and the number of processes they are split over.

  `config.data_shards` fixes how the dataset is cut (0 = one shard per process, the default); each
  process reads `data_shards / process_count` consecutive shards and mixes them round-robin. So the
  examples of a global batch depend only on `data_shards` and the seed, not on how many processes
  (or devices) read them: a run on 1 process with data_shards=2 sees the same batches as a run on 2.
  """
  n = int(_cfg_get(config, "data_shards", 0) or shard.shard_count)
  if n % shard.shard_count:
    raise ValueError(f"data_shards={n} is not a multiple of the {shard.shard_count} processes")
  per = n // shard.shard_count
  return [grain.sharding.ShardOptions(shard_index=shard.shard_index * per + k, shard_count=n,
                                      drop_remainder=shard.drop_remainder)
          for k in range(per)], shard.shard_count


def make_dataset(source, config, *, seed: int | None = None,
                 shard: grain.sharding.ShardOptions | None = None,
                 batch_size: int | None = None, image_size: int | None = None) -> grain.MapDataset:
  """The pipeline up to batching, as a MapDataset (no worker processes yet); its batches hold
  uint8 `image`/`skin_mask` (`make_pipeline` converts them to float32 at the end).

  source: a random-access data source (`tfds_builders.load_prepared`) or a dataset path.
  config: the data config (`configs/data.py`: seed, shuffle, num_epochs, global_batch_size,
  augment, data_shards). shard: this process's share, defaults to `process_shard()`. batch_size:
  per-process batch, defaults to global_batch_size / process count. image_size: crops are resized
  to this side (px) when the dataset holds another size (None: as stored).
  """
  if isinstance(source, (str, os.PathLike)):
    from data_pipelines.tfds_builders import load_prepared
    source = load_prepared(source, _cfg_get(config, "split", "train"))
  shard = shard or process_shard()
  seed = int(_cfg_get(config, "seed", 0) if seed is None else seed)
  data_shards, processes = data_shards_of_process(config, shard)
  if batch_size is None:
    global_batch = int(_cfg_get(config, "global_batch_size", 32))
    if global_batch % processes:
      raise ValueError(f"global_batch_size {global_batch} is not divisible by the "
                       f"{processes} processes")
    batch_size = global_batch // processes
  if len(source) == 0:
    raise ValueError("the dataset is empty (no records)")
  base = grain.MapDataset.source(source).map_with_index(_WithIndex(len(source)))
  aug = AugmentOptions.from_config(_cfg_get(config, "augment", {}))
  parts = []
  for sh in data_shards:
    ds = shard_dataset(base, sh)
    if len(ds) * len(data_shards) < batch_size:
      raise ValueError(f"this process's shards hold {len(ds) * len(data_shards)} records, fewer "
                       f"than one batch of {batch_size}")
    if _cfg_get(config, "shuffle", True):
      ds = ds.shuffle(seed=seed % 2**32)
    ds = ds.repeat(_cfg_get(config, "num_epochs", None))
    parts.append(ds.random_map(DecodeAndAugment(aug, image_size=image_size),
                               seed=(seed + 1 + _SHARD_SEED_STRIDE * sh.shard_index) % 2**32))
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights=[1] * len(parts))
  return ds.batch(batch_size, drop_remainder=True)


def make_pipeline(source, config, *, seed: int | None = None,
                  shard: grain.sharding.ShardOptions | None = None,
                  batch_size: int | None = None, worker_count: int | None = None,
                  image_size: int | None = None) -> grain.IterDataset:
  """`make_dataset` + reading threads + `worker_count` worker processes (config `worker_count`).

  Iterate it (`iter(...)`) for a checkpointable `grain.DatasetIterator` of host batches.
  """
  ds = make_dataset(source, config, seed=seed, shard=shard, batch_size=batch_size,
                    image_size=image_size)
  workers = int(_cfg_get(config, "worker_count", 0) if worker_count is None else worker_count)
  read = grain.ReadOptions(num_threads=int(_cfg_get(config, "read_threads", 1)),
                           prefetch_buffer_size=int(_cfg_get(config, "prefetch_buffer_size", 4)))
  it_ds = ds.to_iter_dataset(read)
  if workers > 0:
    _ensure_absl_flags()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers,
        per_worker_buffer_size=int(_cfg_get(config, "worker_buffer_size", 2))),
        worker_init_fn=_worker_init)
  return it_ds.map(ToFloat())


def _ensure_absl_flags() -> None:
  """Grain's worker processes read absl flags; outside an absl app they are not parsed yet, so the
  defaults are taken (what `absl.app.run` would do with no flags on the command line)."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _worker_init(worker_index: int, worker_count: int) -> None:
  del worker_index, worker_count
  import cv2
  cv2.setNumThreads(1)   # parallelism comes from the workers; OpenCV threads would oversubscribe


def checkpoint_args(iterator, restore: bool = False) -> Any:
  """Orbax args for a pipeline iterator: `grain.checkpoint.CheckpointSave/CheckpointRestore(it)`.

  Use inside `ocp.args.Composite(..., data=checkpoint_args(it))` with a `CheckpointManager`.
  """
  return (grain.checkpoint.CheckpointRestore(iterator) if restore
          else grain.checkpoint.CheckpointSave(iterator))
