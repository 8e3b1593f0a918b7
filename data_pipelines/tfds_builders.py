"""TFDS dataset builders that write ArrayRecord files, with no TensorFlow needed.

Both builders use only `tfds.features.Tensor` / `Text` / scalar features (no `tfds.features.Image`,
which needs TensorFlow): images are stored as encoded bytes (JPEG or PNG) and decoded with OpenCV in
the Grain map (`data_pipelines.pipeline`). A prepared dataset is read back with
`load_prepared(path)` (a random-access ArrayRecord data source) without the builder class.

Record features (S = crop size, 224 by default):

=================  ==================  ===============================================================
feature            shape / type        meaning
=================  ==================  ===============================================================
image              bytes               encoded S x S RGB crop (JPEG by default, or PNG)
skin_mask          [S, S] uint8        255 * P(skin) (synthetic: render coverage), zlib-compressed
landmarks          [68, 2] float32     crop pixels, project convention (centres at +0.5)
align              [3] float32         (scale, tx, ty): crop = scale * original + (tx, ty)
key                text                source path relative to the root (+ "#face"), or "synthetic/i"
---- msma_face_images only ------------------------------------------------------------------------
source_landmarks   [68, 2] float32     the landmarks in the original photo's pixels
image_size         [2] int32           original (H, W) after EXIF rotation
face_index         int32               0 = largest face of the photo
origin             text                detector | file | file5+detector | annotation
score              float32             detector score (NaN when landmarks were given)
pose_deg           [3] float32         (yaw, pitch, roll) from an annotation, NaN when unknown
---- msma_synthetic_faces only --------------------------------------------------------------------
coeffs             [K] float32         flat coefficients [id | exp | tex | angle | gamma | trans]
=================  ==================  ===============================================================
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import signal

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.faces import FacePreprocessor, SkipImage, Summary
from data_pipelines.images import encode_image
from data_pipelines.landmarks import NUM_LANDMARKS
from data_pipelines.sources import SourceItem, open_source

SUMMARY_FILE = "prepare_summary.json"


def _common_features(size: int) -> dict:
  return {
      "image": tfds.features.Tensor(shape=(), dtype=np.object_),
      # zlib (TFDS's own Tensor encoding) decodes ~4x faster than a PNG of the same mask.
      "skin_mask": tfds.features.Tensor(shape=(size, size), dtype=np.uint8,
                                        encoding=tfds.features.Encoding.ZLIB),
      "landmarks": tfds.features.Tensor(shape=(NUM_LANDMARKS, 2), dtype=np.float32),
      "align": tfds.features.Tensor(shape=(3,), dtype=np.float32),
      "key": tfds.features.Text(),
  }


def _encode_crop(image: np.ndarray, fmt: str, quality: int) -> bytes:
  return encode_image(image, fmt, quality)


# ---- msma_face_images -----------------------------------------------------------------------------

_WORKER = {}


def _worker_init(options: dict, reference: np.ndarray) -> None:
  import cv2
  cv2.setNumThreads(1)
  fp = FacePreprocessor(**options, reference=reference)
  _WORKER["fp"] = fp


def _process_item(item: SourceItem, fp: FacePreprocessor | None = None):
  """-> (item, [AlignedFace] or SkipImage)."""
  fp = fp or _WORKER["fp"]
  if item.error:
    return item, SkipImage("bad_landmarks", item.error)
  try:
    return item, fp.process(item.path, landmarks=item.landmarks)
  except SkipImage as e:
    return item, e


class MsmaFaceImages(tfds.core.GeneratorBasedBuilder):
  """Aligned crops, landmarks and skin masks of the faces in a folder of photos.

  Build arguments: source_dir (the photos), layout ('folder' | '300w_lp' | 'aflw2000_3d'),
  preprocessor options (detector, max_faces, min_side, upsample, detect_max_side, use_landmark_files),
  image_format ('jpeg' | 'png'), jpeg_quality, num_workers (processes for detection; 0 = inline),
  progress (a tqdm bar over the photos). After `download_and_prepare`, `summary` holds the counts
  (also written to `prepare_summary.json` beside the records).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(self, *, source_dir: str | os.PathLike | None = None, layout: str = "folder",
               detector: str = "hog", max_faces: int | None = 1, min_side: int = 32,
               upsample: int = 1, detect_max_side: int = 1280, use_landmark_files: bool = True,
               crop_size: int = 224, image_format: str = "jpeg", jpeg_quality: int = 95,
               num_workers: int = 0, progress: bool = True, **kwargs):
    self.source_dir = source_dir
    self.layout = layout
    self.crop_size = int(crop_size)
    self.preprocessor_options = dict(detector=detector, max_faces=max_faces, min_side=min_side,
                                     upsample=upsample, detect_max_side=detect_max_side,
                                     use_landmark_files=use_landmark_files, crop_size=crop_size)
    self.image_format, self.jpeg_quality = image_format, int(jpeg_quality)
    self.num_workers, self.progress = int(num_workers), progress
    self.summary = Summary()
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = _common_features(self.crop_size)
    features.update({
        "source_landmarks": tfds.features.Tensor(shape=(NUM_LANDMARKS, 2), dtype=np.float32),
        "image_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        "face_index": np.int32,
        "origin": tfds.features.Text(),
        "score": np.float32,
        "pose_deg": tfds.features.Tensor(shape=(3,), dtype=np.float32),
    })
    return tfds.core.DatasetInfo(
        builder=self, description="Aligned face crops (msma-jax prepare-data).",
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(crop_size=self.crop_size, image_format=self.image_format,
                                        layout=self.layout))

  def _split_generators(self, dl_manager):
    del dl_manager
    if self.source_dir is None:
      raise ValueError("msma_face_images: building needs source_dir (a folder of photos)")
    return {"train": self._generate_examples()}

  def _results(self, items: list[SourceItem]):
    opts = dict(self.preprocessor_options)
    if self.num_workers <= 0:
      fp = FacePreprocessor(**opts)
      for item in items:
        yield _process_item(item, fp)
      return
    from data_pipelines.alignment import reference_five_points
    reference = reference_five_points(None, self.crop_size)
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(self.num_workers, mp_context=ctx,
                                                  initializer=_worker_init,
                                                  initargs=(opts, reference))
    # The workers start with SIGINT ignored (inherited while map() spawns them): Ctrl-C reaches
    # the whole process group, and only this process should answer it, not every worker with a
    # traceback of its own.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
      results = pool.map(_process_item, items, chunksize=4)
    finally:
      signal.signal(signal.SIGINT, previous)
    try:
      yield from results
    finally:
      # Interrupted or failed: the photos not started yet are dropped, not processed first.
      pool.shutdown(wait=True, cancel_futures=True)

  def _generate_examples(self):
    items = list(open_source(self.source_dir, self.layout))
    results = self._results(items)
    if self.progress:
      from tqdm import tqdm
      results = tqdm(results, total=len(items), desc="faces", unit="img")
    for item, faces in results:
      if isinstance(faces, SkipImage):
        self.summary.add_skip(faces)
        continue
      self.summary.add_faces(len(faces))
      pose = (np.asarray(item.pose_deg, np.float32) if item.pose_deg is not None
              else np.full(3, np.nan, np.float32))
      for f in faces:
        key = item.key if f.face_index == 0 else f"{item.key}#{f.face_index}"
        yield key, {
            "image": _encode_crop(f.image, self.image_format, self.jpeg_quality),
            "skin_mask": f.skin_mask,
            "landmarks": f.landmarks.astype(np.float32),
            "align": f.transform.as_array(),
            "key": key,
            "source_landmarks": f.source_landmarks.astype(np.float32),
            "image_size": np.asarray(f.image_size, np.int32),
            "face_index": np.int32(f.face_index),
            "origin": f.origin,
            "score": np.float32(f.score),
            "pose_deg": pose,
        }


# ---- msma_synthetic_faces -------------------------------------------------------------------------

class MsmaSyntheticFaces(tfds.core.GeneratorBasedBuilder):
  """Faces rendered from a face model with known coefficients (`data_pipelines.synthetic`).

  Build arguments: num_examples, seed, face_model ('embedded' or a file), crop_size, options
  (`SyntheticOptions`), render_batch (faces rendered per `render_face` call), image_format,
  jpeg_quality, progress. The same arguments give the same dataset.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(self, *, num_examples: int = 1000, seed: int = 0, face_model: str = "embedded",
               crop_size: int = 224, options=None, render_batch: int = 16,
               image_format: str = "jpeg", jpeg_quality: int = 95, progress: bool = True, **kwargs):
    from data_pipelines.synthetic import SyntheticOptions
    from msma_jax.face_model import load_face_model
    self.num_examples, self.seed, self.face_model_name = int(num_examples), int(seed), face_model
    self.face_model = load_face_model(face_model)
    self.crop_size, self.render_batch = int(crop_size), int(render_batch)
    self.options = options or SyntheticOptions()
    self.image_format, self.jpeg_quality, self.progress = image_format, int(jpeg_quality), progress
    self.summary = Summary()
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = _common_features(self.crop_size)
    features["coeffs"] = tfds.features.Tensor(shape=(self.face_model.sizes.total,),
                                              dtype=np.float32)
    import dataclasses
    return tfds.core.DatasetInfo(
        builder=self, description="Synthetic faces rendered from a 3D morphable model.",
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(
            crop_size=self.crop_size, image_format=self.image_format,
            face_model=str(self.face_model_name), seed=self.seed,
            coefficient_sizes=list(self.face_model.sizes),
            options=dataclasses.asdict(self.options)))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    from msma_jax import camera as cam
    from data_pipelines import synthetic
    fm = self.face_model
    camera = cam.Camera.for_face_model(fm, self.crop_size)
    rng = np.random.default_rng(self.seed)
    bar = None
    if self.progress:
      from tqdm import tqdm
      bar = tqdm(total=self.num_examples, desc="synthetic faces", unit="img")
    noise = None
    if self.options.framing == "detector":
      from data_pipelines.detector_framing import load_calibration
      noise = load_calibration(str(self.face_model_name))
    nb = self.render_batch
    for start in range(0, self.num_examples, nb):
      n = min(nb, self.num_examples - start)
      # always nb faces per call (one compiled shape); a short last batch keeps its first n
      flat, images, masks, landmarks = synthetic.make_faces(fm, rng, nb, camera, self.options,
                                                            noise)
      for j in range(n):
        i = start + j
        rgb = np.round(images[j] * 255).astype(np.uint8)
        key = f"synthetic/{i:08d}"
        self.summary.add_faces(1)
        yield key, {
            "image": _encode_crop(rgb, self.image_format, self.jpeg_quality),
            "skin_mask": np.round(masks[j] * 255).astype(np.uint8),
            "landmarks": landmarks[j].astype(np.float32),
            "align": np.array([1.0, 0.0, 0.0], np.float32),
            "key": key,
            "coeffs": flat[j].astype(np.float32),
        }
      if bar is not None:
        bar.update(n)
    if bar is not None:
      bar.close()


# ---- building and loading -------------------------------------------------------------------------

def build(builder: tfds.core.GeneratorBasedBuilder, *, overwrite: bool = False) -> pathlib.Path:
  """Writes the dataset as ArrayRecord (no TensorFlow); returns the folder holding its records.

  An existing dataset is kept unless `overwrite`. The builder's `summary` is saved beside it.
  """
  mode = (tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS if not overwrite
          else tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
  if overwrite and pathlib.Path(builder.data_dir).exists():
    import shutil
    shutil.rmtree(builder.data_dir)
  from tensorflow_datasets.core.utils import tqdm_utils
  was_active = tqdm_utils._active  # TFDS's own bars count records; ours counts photos
  tfds.disable_progress_bar()
  import tempfile
  scratch = tempfile.mkdtemp(prefix="msma_tfds_")   # TFDS's download dir: nothing is downloaded
  try:
    builder.download_and_prepare(
        download_dir=scratch,
        file_format=tfds.core.file_adapters.FileFormat.ARRAY_RECORD,
        download_config=tfds.download.DownloadConfig(download_mode=mode))
  except AssertionError as e:
    if "No examples were yielded" not in str(e):
      raise
    s = builder.summary
    raise DatasetError(f"{getattr(builder, 'source_dir', builder.name)}: no usable faces "
                       f"({s.images} images read, {s.num_skipped} skipped); nothing written") from e
  finally:
    tfds.display_progress_bar(was_active)
    import shutil
    shutil.rmtree(scratch, ignore_errors=True)
  path = pathlib.Path(builder.data_dir)
  if builder.summary.images:
    (path / SUMMARY_FILE).write_text(json.dumps(builder.summary.to_dict(), indent=2))
  return path


class DatasetError(ValueError):
  """A prepared dataset folder that is missing or unreadable (the message names it)."""


def _version_key(d: pathlib.Path) -> tuple[int, ...]:
  return tuple(int(x) for x in d.name.split(".") if x.isdigit())


def resolve_dataset_dir(path: str | os.PathLike) -> pathlib.Path:
  """The folder holding `dataset_info.json`, given that folder, its dataset folder (newest version
  taken) or the TFDS data dir above (`DATA_DIR/<name>/<version>`, the one dataset in it)."""
  p = pathlib.Path(path).expanduser()
  if (p / "dataset_info.json").is_file():
    return p
  versions = [d for d in p.glob("*") if (d / "dataset_info.json").is_file()]
  if versions:
    return max(versions, key=_version_key)
  names = sorted({d.parent for d in p.glob("*/*") if (d / "dataset_info.json").is_file()})
  if len(names) > 1:
    raise DatasetError(f"{p}: holds several datasets ({', '.join(n.name for n in names)}); "
                       "name one of them")
  if not names:
    raise DatasetError(f"{p}: no prepared dataset here (expected dataset_info.json; run "
                       "`msma-jax prepare-data`)")
  return resolve_dataset_dir(names[0])


def load_prepared(path: str | os.PathLike, split: str = "train"):
  """Random-access source of a prepared dataset folder (the one holding `dataset_info.json`).

  Also accepts the folders above it (`DATA_DIR/msma_face_images`, taking the newest version, or
  `DATA_DIR` holding one dataset; see `resolve_dataset_dir`). Returns a TFDS ArrayRecord data
  source: `len(src)`, `src[i]` -> dict of numpy values (bytes for images).
  """
  p = resolve_dataset_dir(path)
  builder = tfds.builder_from_directory(str(p))
  if split not in builder.info.splits:
    raise DatasetError(f"{p}: no split {split!r} (has {list(builder.info.splits)})")
  check_record_files(builder.info.splits[split])
  return builder.as_data_source(split=split)


def check_record_files(split_info) -> None:
  """Opens every ArrayRecord file of a split and compares its record count with dataset_info's,
  so that a missing, truncated or damaged file is named now (DatasetError), not deep in a reader."""
  from array_record.python.array_record_module import ArrayRecordReader
  rebuild = "rebuild it with `msma-jax prepare-data --overwrite`"
  for path, expected in zip(split_info.filepaths, split_info.shard_lengths):
    path = pathlib.Path(str(path))
    if not path.is_file():
      raise DatasetError(f"{path}: record file missing; {rebuild}")
    try:
      reader = ArrayRecordReader(str(path))
      try:
        found = reader.num_records() if reader.ok() else None
      finally:
        reader.close()
    except Exception as e:  # array_record raises RuntimeError (and others) for damaged files
      raise DatasetError(f"{path}: damaged record file ({str(e).splitlines()[0]}); {rebuild}") from e
    if found != expected:
      raise DatasetError(f"{path}: damaged or truncated record file ({found or 0} of {expected} "
                         f"records readable); {rebuild}")


def dataset_metadata(path: str | os.PathLike) -> dict:
  """The builder metadata of a prepared dataset (crop size, image format, ...)."""
  builder = tfds.builder_from_directory(str(resolve_dataset_dir(path)))
  return dict(builder.info.metadata or {})
