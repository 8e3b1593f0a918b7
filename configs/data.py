"""The data section of a training config: the Grain pipeline, augmentation, dataset preparation.

Used as `config.data = get_data_config()` by the training configs, or alone:
`make_pipeline(config.path, get_data_config())` (see `data_pipelines/pipeline.py`).
"""
import ml_collections


def get_data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Prepared dataset: the folder `msma-jax prepare-data` printed (or DATA_DIR/<dataset name>).
  c.path = "data/msma_face_images"
  c.split = "train"

  # Pipeline.
  c.global_batch_size = 32        # split evenly over JAX processes (ShardByJaxProcess)
  c.seed = 0                      # shuffle and augmentation seeds derive from it
  c.data_shards = 0               # dataset cut into this many shards (0: one per process); fix it to
                                  # get the same batches on any number of processes
  c.shuffle = True                # reshuffled every epoch
  c.num_epochs = ml_collections.config_dict.placeholder(int)   # None = repeat forever
  c.worker_count = 2              # Grain worker processes (0 = in the main process)
  c.worker_buffer_size = 2        # batches each worker keeps ready
  c.read_threads = 1              # threads per process reading/decoding records
  c.prefetch_buffer_size = 4      # elements those threads keep ready

  # Augmentation (Deep3DFaceRecon's recipe); geometric parts also move the landmarks and skin mask.
  c.augment = ml_collections.ConfigDict()
  c.augment.enabled = True
  c.augment.shift_px = 10.0
  c.augment.scale = 0.1
  c.augment.rotation_deg = 10.0
  c.augment.flip_prob = 0.5
  c.augment.brightness = 0.2
  c.augment.contrast = 0.2
  c.augment.saturation = 0.2

  # `msma-jax prepare-data` (face detection and alignment of an image folder): its option defaults.
  c.prepare = ml_collections.ConfigDict()
  c.prepare.layout = "folder"     # folder | 300w_lp | aflw2000_3d
  c.prepare.detector = "hog"      # hog | cnn | cascade (dlib; data_pipelines.detection)
  c.prepare.max_faces = 1         # faces per photo, largest first
  c.prepare.min_side = 32         # smaller photos are skipped as too small
  c.prepare.upsample = 1          # dlib pyramid upsampling (1: faces down to ~40 px)
  c.prepare.detect_max_side = 1280
  c.prepare.image_format = "jpeg"
  c.prepare.jpeg_quality = 95
  c.prepare.num_workers = 0

  # Synthetic faces (msma_synthetic_faces).
  c.synthetic = ml_collections.ConfigDict()
  c.synthetic.num_examples = 10000
  c.synthetic.seed = 0
  c.synthetic.max_yaw_deg = 60.0
  c.synthetic.max_pitch_deg = 20.0
  c.synthetic.max_roll_deg = 20.0
  c.synthetic.light_scale = 1.0        # spread of the lighting (ambient and directional terms)
  c.synthetic.jitter_px = 0.0          # extra uniform framing shift (pixels of a 224 crop)
  c.synthetic.jitter_scale = 0.0       # extra uniform framing scale change (relative)
  # Framing: "true" (the face's own landmark vertices) or "detector" (as dlib frames photos,
  # calibrated by scripts/calibrate_framing.py; data_pipelines/framing_calibration.json).
  c.synthetic.framing = "true"
  # Looking like a photo (data_pipelines/photo_like.py; docs/images/synthetic_photo_like.png).
  c.synthetic.backgrounds = "simple"   # simple | natural | mixed
  c.synthetic.head = False             # hair, neck and shoulders behind the face
  c.synthetic.occluder_prob = 0.0      # chance of an object in front of the face
  c.synthetic.camera_artefacts = False   # blur, noise, white balance, gamma, JPEG
  return c


def get_config() -> ml_collections.ConfigDict:
  """ml_collections' config-file entry point (`--config=configs/data.py`)."""
  return get_data_config()
