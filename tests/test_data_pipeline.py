"""The Grain pipeline: batch format, augmentation geometry, determinism, Orbax resume, sharding."""
import pathlib
import subprocess
import sys

import grain
import numpy as np
import pytest
from data_fixtures import write_landmark_photos

from data_pipelines.augment import AugmentOptions
from data_pipelines.images import encode_image
from data_pipelines.landmarks import FLIP_PERMUTATION
from data_pipelines.pipeline import DecodeAndAugment, make_dataset, make_pipeline

N_RECORDS = 24


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  from data_pipelines.tfds_builders import MsmaFaceImages, build
  root = tmp_path_factory.mktemp("pipeline")
  write_landmark_photos(root / "photos", N_RECORDS)
  b = MsmaFaceImages(source_dir=root / "photos", data_dir=root / "data", progress=False)
  path = build(b)
  assert b.summary.faces == N_RECORDS
  return path


def _config(**kw):
  import ml_collections
  sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))
  from configs.data import get_data_config
  c = get_data_config()
  c.global_batch_size = 4
  c.worker_count = 0
  for k, v in kw.items():
    c[k] = v
  assert isinstance(c, ml_collections.ConfigDict)
  return c


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_format(dataset):
  b = next(iter(make_pipeline(dataset, _config())))
  assert set(b) == {"image", "landmarks", "skin_mask", "valid", "index", "flipped", "to_original"}
  assert b["image"].shape == (4, 224, 224, 3) and b["image"].dtype == np.float32
  assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0 and b["image"].std() > 0.1
  assert b["landmarks"].shape == (4, 68, 2) and b["landmarks"].dtype == np.float32
  assert b["skin_mask"].shape == (4, 224, 224) and b["skin_mask"].dtype == np.float32
  assert 0.0 <= b["skin_mask"].min() and b["skin_mask"].max() <= 1.0
  np.testing.assert_array_equal(b["valid"], np.ones(4, np.float32))
  assert b["index"].dtype == np.int64 and b["to_original"].shape == (4, 2, 3)
  # landmarks stay on the face: inside the crop and around its centre
  assert (b["landmarks"] > 0).all() and (b["landmarks"] < 224).all()
  np.testing.assert_allclose(b["landmarks"].mean(axis=1), 112, atol=25)


def test_to_original_maps_back_to_the_photo(dataset):
  from data_pipelines.tfds_builders import load_prepared
  src = load_prepared(dataset)
  b = next(iter(make_pipeline(dataset, _config())))
  for i in range(4):
    rec = src[int(b["index"][i])]
    m = b["to_original"][i].astype(np.float64)
    back = b["landmarks"][i] @ m[:, :2].T + m[:, 2]
    want = rec["source_landmarks"][FLIP_PERMUTATION] if b["flipped"][i] else rec["source_landmarks"]
    np.testing.assert_allclose(back, want, atol=2e-2)


def _blob_record(point, size=224):
  yy, xx = np.mgrid[0:size, 0:size] + 0.5
  blob = np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / (2 * 2.5 ** 2))
  grey = np.round(blob * 255).astype(np.uint8)
  return grey


def _centroid(a, near, radius=10):
  yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]] + 0.5
  w = a * ((np.abs(xx - near[0]) < radius) & (np.abs(yy - near[1]) < radius))
  return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


def test_crops_resized_to_the_run_size_keep_landmarks_and_mapping(dataset):
  """A 224 px dataset read for a 64 px run: pixels, landmarks and to_original scale together."""
  from data_pipelines.tfds_builders import load_prepared
  src = load_prepared(dataset)
  full = next(iter(make_pipeline(dataset, _config(augment=dict(enabled=False)))))
  small = next(iter(make_pipeline(dataset, _config(augment=dict(enabled=False)), image_size=64)))
  assert small["image"].shape == (4, 64, 64, 3) and small["skin_mask"].shape == (4, 64, 64)
  np.testing.assert_array_equal(small["index"], full["index"])
  np.testing.assert_allclose(small["landmarks"], full["landmarks"] * 64 / 224, atol=1e-4)
  import cv2
  want = cv2.resize(full["image"][0], (64, 64), interpolation=cv2.INTER_AREA)
  assert np.abs(small["image"][0] - want).max() < 2.5 / 255
  for i in range(4):
    m = small["to_original"][i].astype(np.float64)
    back = small["landmarks"][i] @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(back, src[int(small["index"][i])]["source_landmarks"], atol=2e-2)
  # with augmentation on, the resized crop still maps back to the photo
  aug = next(iter(make_pipeline(dataset, _config(), image_size=64)))
  for i in range(4):
    m = aug["to_original"][i].astype(np.float64)
    back = aug["landmarks"][i] @ m[:, :2].T + m[:, 2]
    rec = src[int(aug["index"][i])]
    want = rec["source_landmarks"][FLIP_PERMUTATION] if aug["flipped"][i] else rec["source_landmarks"]
    np.testing.assert_allclose(back, want, atol=2e-2)


def test_augmentation_moves_pixels_masks_and_landmarks_together():
  rng = np.random.default_rng(0)
  lm = np.stack([rng.uniform(60, 164, 68), rng.uniform(60, 164, 68)], -1).astype(np.float32)
  aug = DecodeAndAugment(AugmentOptions(shift_px=10, scale=0.1, rotation_deg=10, flip_prob=0.5,
                                        brightness=0, contrast=0, saturation=0))
  flips = set()
  for seed in range(6):
    for k in (0, 36, 54):
      grey = _blob_record(lm[k])
      rec = {"image": encode_image(np.repeat(grey[..., None], 3, -1), "png"),
             "skin_mask": encode_image(grey, "png"), "landmarks": lm, "_index": 0,
             "align": np.array([1, 0, 0], np.float32)}
      out = aug.random_map(rec, np.random.default_rng(seed))
      flipped = bool(out["flipped"])
      flips.add(flipped)
      where = out["landmarks"][FLIP_PERMUTATION[k] if flipped else k]
      np.testing.assert_allclose(_centroid(out["image"][..., 0], where), where, atol=0.2)
      np.testing.assert_allclose(_centroid(out["skin_mask"], where), where, atol=0.2)
  assert flips == {True, False}


def test_colour_jitter_changes_only_the_image(dataset):
  base = make_pipeline(dataset, _config(augment=dict(enabled=False)))
  jitter = make_pipeline(dataset, _config(augment=dict(
      shift_px=0.0, scale=0.0, rotation_deg=0.0, flip_prob=0.0, brightness=0.3, contrast=0.3,
      saturation=0.3)))
  a, b = next(iter(base)), next(iter(jitter))
  np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
  np.testing.assert_array_equal(a["skin_mask"], b["skin_mask"])
  assert np.abs(a["image"] - b["image"]).mean() > 0.01
  assert not a["flipped"].any()


def test_seeded_and_reshuffled_each_epoch(dataset):
  cfg = _config()
  per_epoch = N_RECORDS // 4
  run1 = _take(iter(make_pipeline(dataset, cfg)), 2 * per_epoch)
  run2 = _take(iter(make_pipeline(dataset, cfg)), 2 * per_epoch)
  _assert_batches_equal(run1, run2)
  epoch1 = np.concatenate([b["index"] for b in run1[:per_epoch]])
  epoch2 = np.concatenate([b["index"] for b in run1[per_epoch:]])
  assert sorted(epoch1) == list(range(N_RECORDS)) == sorted(epoch2)
  assert list(epoch1) != list(epoch2) and list(epoch1) != sorted(epoch1)
  other = np.concatenate([b["index"] for b in _take(iter(make_pipeline(dataset, _config(seed=7))),
                                                    per_epoch)])
  assert list(other) != list(epoch1)
  # the same record gets new augmentation in the next epoch
  first = {int(i): b["landmarks"][j] for b in run1[:per_epoch] for j, i in enumerate(b["index"])}
  second = {int(i): b["landmarks"][j] for b in run1[per_epoch:] for j, i in enumerate(b["index"])}
  assert all(np.abs(first[i] - second[i]).max() > 0.1 for i in range(N_RECORDS))


def test_orbax_checkpoint_resumes_exactly(dataset, tmp_path):
  import orbax.checkpoint as ocp

  from data_pipelines.pipeline import checkpoint_args
  cfg = _config()
  it = iter(make_pipeline(dataset, cfg))
  _take(it, 3)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(3, args=ocp.args.Composite(data=checkpoint_args(it)))
    mngr.wait_until_finished()
  expected = _take(it, 8)                     # crosses the epoch boundary at batch 6
  fresh = iter(make_pipeline(dataset, cfg))
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    assert mngr.latest_step() == 3
    restored = mngr.restore(3, args=ocp.args.Composite(data=checkpoint_args(fresh, restore=True)))
  resumed = _take(restored["data"], 8)
  _assert_batches_equal(expected, resumed)
  import json
  state = json.loads((tmp_path / "ckpt/3/data/process_0-of-1.json").read_text())
  assert state == {"next_index": 3}         # batches consumed; the rest follows from the seed


def test_worker_processes_give_the_same_batches(dataset):
  cfg = _config()
  inline = _take(iter(make_pipeline(dataset, cfg)), 3)
  it = iter(make_pipeline(dataset, cfg, worker_count=2))
  try:
    _assert_batches_equal(inline, _take(it, 3))
  finally:
    it.close()


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_process_shards_are_disjoint_and_cover_the_dataset(dataset, drop_remainder):
  count = 5                                  # 24 records: 4 per shard + 4 left over
  seen = []
  for i in range(count):
    shard = grain.sharding.ShardOptions(i, count, drop_remainder=drop_remainder)
    ds = make_dataset(dataset, _config(), shard=shard, batch_size=1)
    n = N_RECORDS // count if drop_remainder else len(range(i, N_RECORDS, count))
    idx = [int(ds[j]["index"][0]) for j in range(n)]
    assert len(set(idx)) == n
    # the next epoch of this shard holds the same records
    assert sorted(int(ds[n + j]["index"][0]) for j in range(n)) == sorted(idx)
    seen.append(set(idx))
  union = set().union(*seen)
  assert sum(len(s) for s in seen) == len(union)                 # disjoint
  if drop_remainder:
    assert len(union) == N_RECORDS - N_RECORDS % count
  else:
    assert union == set(range(N_RECORDS))                         # covering
  # the default shard is this JAX process's: the whole dataset on one host
  from data_pipelines.pipeline import process_shard
  assert (process_shard().shard_index, process_shard().shard_count) == (0, 1)
  with pytest.raises(ValueError, match="not divisible by the 5 processes"):
    make_dataset(dataset, _config(global_batch_size=8), shard=grain.sharding.ShardOptions(0, 5))


def test_batches_land_sharded_on_the_data_mesh():
  code = """
import os, numpy as np, jax
from data_pipelines.device import data_mesh, to_device, device_batches
mesh = data_mesh()
assert mesh.shape == {"data": 4}, mesh.shape
batch = {"image": np.arange(8 * 3 * 2, dtype=np.float32).reshape(8, 3, 2),
         "index": np.arange(8, dtype=np.int64)}
out = to_device(batch, mesh)
x = out["image"]
assert x.shape == (8, 3, 2) and x.sharding.spec == jax.sharding.PartitionSpec("data")
for shard in x.addressable_shards:
  rows = shard.index[0]
  assert shard.data.shape == (2, 3, 2)
  np.testing.assert_array_equal(np.asarray(shard.data), batch["image"][rows])
np.testing.assert_array_equal(np.asarray(out["index"]), batch["index"])
got = list(device_batches(iter([batch] * 3), mesh, prefetch=2))
assert len(got) == 3 and all(g["image"].sharding == x.sharding for g in got)
print("ok")
"""
  env = {**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                     timeout=300, cwd=pathlib.Path(__file__).parent.parent)
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_colour_jitter_is_brightness_then_contrast_then_saturation():
  from data_pipelines.augment import colour_jitter
  rng = np.random.default_rng(1)
  img = rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
  opts = AugmentOptions(brightness=0.3, contrast=0.3, saturation=0.3)
  out = colour_jitter(img, np.random.default_rng(5), opts).astype(np.float64)
  r = np.random.default_rng(5)
  b, c, s = (1 + r.uniform(-1, 1) * 0.3 for _ in range(3))
  x = img.astype(np.float64) * b                                   # brightness
  x = (x - x.mean()) * c + x.mean()                                 # contrast about the mean
  grey = x @ np.array([0.299, 0.587, 0.114])
  x = (x - grey[..., None]) * s + grey[..., None]                   # saturation about the luma
  want = np.clip(x, 0, 255)
  assert np.abs(out - want).max() <= 1.0
  assert np.abs(out - img).mean() > 5
  assert colour_jitter(img, rng, AugmentOptions(brightness=0, contrast=0, saturation=0)) is img


_PROCESS = """
import json, sys
import jax
pid, port, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
import numpy as np
sys.path.insert(0, ".")
from configs.data import get_data_config
from data_pipelines.device import data_mesh, to_device
from data_pipelines.pipeline import make_dataset, process_shard
cfg = get_data_config()
cfg.global_batch_size = 4
ds = make_dataset(path, cfg)                                  # this process's shard, batches of 2
epoch = [int(i) for b in range(6) for i in ds[b]["index"]]    # 24 records / 2 processes / 2
batch = ds[0]
out = to_device({"index": batch["index"], "image": batch["image"]}, data_mesh())
local = sorted(int(v) for s in out["index"].addressable_shards for v in np.asarray(s.data))
print(json.dumps({"shard": [process_shard().shard_index, process_shard().shard_count],
                  "epoch": epoch, "global": list(out["image"].shape), "local": local,
                  "batch": [int(i) for i in batch["index"]]}))
jax.distributed.shutdown()
"""


def test_two_jax_processes_get_disjoint_shards_and_one_global_batch(dataset, tmp_path):
  """Two real JAX processes (2 CPU devices each): ShardByJaxProcess splits the records, and
  make_array_from_process_local_data joins the two local batches into one global batch."""
  import json
  import os
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = str(s.getsockname()[1])
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "JAX_PLATFORMS": "cpu"}
  root = pathlib.Path(__file__).parent.parent
  procs = [subprocess.Popen([sys.executable, "-c", _PROCESS, str(pid), port, str(dataset)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=root) for pid in (0, 1)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  assert [o["shard"] for o in outs] == [[0, 2], [1, 2]]
  e0, e1 = set(outs[0]["epoch"]), set(outs[1]["epoch"])
  assert len(e0) == len(e1) == 12 and not e0 & e1 and e0 | e1 == set(range(N_RECORDS))
  assert all(o["global"] == [4, 224, 224, 3] for o in outs)
  assert [o["local"] for o in outs] == [sorted(o["batch"]) for o in outs]


def test_fixed_data_shards_give_the_same_global_batches_on_any_process_count(dataset):
  """data_shards=2 read by 1 process == the two halves read by 2 processes, batch by batch."""
  one = make_dataset(dataset, _config(global_batch_size=8, data_shards=2),
                     shard=grain.sharding.ShardOptions(0, 1, drop_remainder=True))
  halves = [make_dataset(dataset, _config(global_batch_size=8, data_shards=2),
                         shard=grain.sharding.ShardOptions(p, 2, drop_remainder=True))
            for p in range(2)]
  for step in range(5):                                       # crosses an epoch boundary
    a = one[step]
    b = [h[step] for h in halves]
    assert sorted(a["index"].tolist()) == sorted(b[0]["index"].tolist() + b[1]["index"].tolist())
    order = np.argsort(a["index"])
    merged = {k: np.concatenate([b[0][k], b[1][k]]) for k in ("image", "landmarks", "index")}
    morder = np.argsort(merged["index"])
    np.testing.assert_array_equal(a["image"][order], merged["image"][morder])  # same augmentation
    np.testing.assert_allclose(a["landmarks"][order], merged["landmarks"][morder])
  with pytest.raises(ValueError, match="data_shards=3 is not a multiple of the 2 processes"):
    make_dataset(dataset, _config(data_shards=3), shard=grain.sharding.ShardOptions(0, 2))
