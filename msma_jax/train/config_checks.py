"""Validation of a training config before anything is compiled: one validator per section.

Each `check_<section>` raises `configs.errors.ConfigError` whose message starts with the key
(`config.loss.landmark must be finite, got nan`); `check_config` runs them all. Defaults live in
`configs/`; nothing here supplies a value.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import pathlib

import jax

from configs.errors import ConfigError
from configs.fit import FIT_SCHEDULES
from configs.loss import SHAPE_ALIGN, SWITCHES as LOSS_SWITCHES, WEIGHTS as LOSS_WEIGHTS
from msma_jax.render.rasterize import BATCH_MODES, CHUNK_SIZINGS, MATERIALIZE_MODES
from data_pipelines.detector_framing import load_calibration
from data_pipelines.synthetic import BACKGROUNDS, FRAMINGS, SyntheticOptions
from msma_jax.face_model import FIELDS, available_face_models
from msma_jax.face_model.io import NORMAL_MODES
from msma_jax.models import spec_from_config
from msma_jax.train.init import parse_init_source

WANDB_MODES = ("auto", "online", "offline", "disabled")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine")
BEST_MODES = ("min", "max")


def _number(value, key: str, *, minimum: float | None = None, maximum: float | None = None,
            integer: bool = False):
  """`value` as a finite number within [minimum, maximum]; ConfigError naming `config.<key>`."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ConfigError(f"config.{key} must be a number, got {type(value).__name__} {value!r}")
  if not math.isfinite(value):
    raise ConfigError(f"config.{key} must be finite, got {value!r}")
  if integer and int(value) != value:
    raise ConfigError(f"config.{key} must be an integer, got {value!r}")
  if minimum is not None and value < minimum:
    raise ConfigError(f"config.{key} must be >= {minimum}, got {value!r}")
  if maximum is not None and value > maximum:
    raise ConfigError(f"config.{key} must be <= {maximum}, got {value!r}")
  return value


def _switch(value, key: str) -> bool:
  """`value` if it is True or False; else ConfigError naming `config.<key>`."""
  if isinstance(value, bool):
    return value
  raise ConfigError(f"config.{key} must be True or False, got {type(value).__name__} {value!r}")


def _choice(value, key: str, allowed, what: str | None = None) -> str:
  """`value` if in `allowed`; else ConfigError ("unknown <what> ..." when `what` is given)."""
  if value in allowed:
    return value
  if what is None:
    raise ConfigError(f"config.{key} must be one of {', '.join(allowed)}, got {value!r}")
  raise ConfigError(f"config.{key}: unknown {what + ' ' if what else ''}{value!r} "
                    f"({' | '.join(allowed)})")


def check_model(model) -> None:
  try:
    spec_from_config(model)   # the model section's validator (raises ConfigError naming the field)
  except ConfigError:
    raise
  except (TypeError, ValueError, KeyError, AttributeError) as e:   # a malformed section (wrong types)
    raise ConfigError(f"config.model: {type(e).__name__}: {e}") from e


def check_loss(loss) -> None:
  for k in LOSS_WEIGHTS:
    if k in loss:
      _number(loss[k], f"loss.{k}", minimum=0.0)
  _choice(loss.get("shape_3d_align", "none"), "loss.shape_3d_align", SHAPE_ALIGN)
  for k in LOSS_SWITCHES:
    if k in loss:
      _switch(loss[k], f"loss.{k}")
  if not isinstance(loss.get("identity_network", "none"), str):
    raise ConfigError("config.loss.identity_network must be a string ('none', 'dlib', "
                      "'arcface_onnx:<path>')")


def check_fit(fit) -> None:
  """The test-time fitting section (`configs/fit.py`), where a config carries one."""
  _number(fit.get("steps", 0), "fit.steps", minimum=0, integer=True)
  _number(fit.get("landmark_steps", 0), "fit.landmark_steps", minimum=0, integer=True)
  _number(fit.get("learning_rate", 0.05), "fit.learning_rate", minimum=0.0)
  _switch(fit.get("contour_landmarks", False), "fit.contour_landmarks")
  _choice(fit.get("schedule", "constant"), "fit.schedule", FIT_SCHEDULES)
  _number(fit.get("guard_ratio", 2.0), "fit.guard_ratio", minimum=1.0)
  limits = tuple(fit.get("quality_nme", (0.05, 0.10)))
  if len(limits) != 2:
    raise ConfigError(f"config.fit.quality_nme must be (good, fair) limits, got {limits!r}")
  good = _number(limits[0], "fit.quality_nme[0]", minimum=0.0)
  _number(limits[1], "fit.quality_nme[1]", minimum=good)
  for key in ("groups", "landmark_groups"):
    groups = fit.get(key, ())
    if isinstance(groups, str) or not all(isinstance(g, str) for g in groups):
      raise ConfigError(f"config.fit.{key} must be a tuple of coefficient groups, got {groups!r}")
    for g in groups:
      _choice(g, f"fit.{key}", FIELDS, "coefficient group")
  if "loss" in fit:
    check_loss(fit.loss)


def check_render(render) -> None:
  _choice(render.batch_mode, "render.batch_mode", BATCH_MODES)
  _choice(render.chunk_sizing, "render.chunk_sizing", CHUNK_SIZINGS)
  _choice(render.materialize, "render.materialize", MATERIALIZE_MODES)
  _number(render.chunk_fragments, "render.chunk_fragments", minimum=1, integer=True)
  _number(render.min_chunk_fragments, "render.min_chunk_fragments", minimum=1, integer=True)


def _check_dataset(section, key: str) -> None:
  path = section.path
  if not isinstance(path, str) or not path:
    raise ConfigError(f"config.{key}.path must be a dataset folder, got {path!r}")
  if not section.get("synthetic_if_missing", False) and not pathlib.Path(path).expanduser().exists():
    raise ConfigError(f"config.{key}.path: {path} does not exist (prepare it with "
                      "`msma-jax prepare-data`, or set synthetic_if_missing=True for synthetic "
                      "faces)")
  synth = section.get("synthetic")
  if synth is not None:
    _number(synth.num_examples, f"{key}.synthetic.num_examples", minimum=1, integer=True)
    for k in ("max_yaw_deg", "max_pitch_deg", "max_roll_deg"):
      _number(synth[k], f"{key}.synthetic.{k}", minimum=0.0, maximum=90.0)
    _check_synthetic(synth, f"{key}.synthetic")


# The synthetic section: the builder's own keys and the fields of `SyntheticOptions`.
_SYNTHETIC_KEYS = ("num_examples", "seed") + tuple(
    f.name for f in dataclasses.fields(SyntheticOptions))


def _check_synthetic(synth, key: str) -> None:
  unknown = sorted(set(synth) - set(_SYNTHETIC_KEYS))
  if unknown:
    raise ConfigError(f"config.{key}.{unknown[0]}: unknown key (known: {', '.join(_SYNTHETIC_KEYS)})")
  for k in ("id_scale", "exp_scale", "tex_scale", "light_scale", "jitter_px", "jitter_scale"):
    if k in synth:
      _number(synth[k], f"{key}.{k}", minimum=0.0)
  if "jitter_scale" in synth:
    _number(synth.jitter_scale, f"{key}.jitter_scale", minimum=0.0, maximum=0.9)
  if "occluder_prob" in synth:
    _number(synth.occluder_prob, f"{key}.occluder_prob", minimum=0.0, maximum=1.0)
  _choice(synth.get("framing", "true"), f"{key}.framing", FRAMINGS)
  _choice(synth.get("backgrounds", "simple"), f"{key}.backgrounds", BACKGROUNDS)
  for k in ("head", "camera_artefacts"):
    if not isinstance(synth.get(k, False), bool):
      raise ConfigError(f"config.{key}.{k} must be True or False, got {synth[k]!r}")


def check_data(data) -> None:
  batch = _number(data.global_batch_size, "data.global_batch_size", minimum=1, integer=True)
  n = jax.device_count()
  if batch % n:
    raise ConfigError(f"config.data.global_batch_size={batch} is not divisible by the {n} devices "
                      f"(use a multiple of {n})")
  for k in ("worker_count", "worker_buffer_size", "read_threads", "prefetch_buffer_size",
            "data_shards"):
    if k in data:
      _number(data[k], f"data.{k}", minimum=0, integer=True)
  aug = data.get("augment")
  if aug is not None:
    for k, v in aug.items():
      if k != "enabled":
        _number(v, f"data.augment.{k}", minimum=0.0)
    _number(aug.get("flip_prob", 0.0), "data.augment.flip_prob", maximum=1.0)
  _check_dataset(data, "data")


def check_eval(ev) -> None:
  if not ev.enabled:
    return
  _number(ev.batch_size, "eval.batch_size", minimum=1, integer=True)
  _check_dataset(ev, "eval")


def check_optim(optim) -> None:
  _choice(optim.get("name", "adam"), "optim.name", OPTIMIZERS, "optimizer")
  _choice(optim.get("schedule", "constant"), "optim.schedule", SCHEDULES, "")
  _number(optim.learning_rate, "optim.learning_rate", minimum=0.0)
  for k in ("weight_decay", "grad_clip_norm", "decay_every_epochs", "decay_factor",
            "final_fraction", "momentum"):
    if k in optim:
      _number(optim[k], f"optim.{k}", minimum=0.0)
  _number(optim.get("warmup_steps", 0), "optim.warmup_steps", minimum=0, integer=True)


def check_train(train) -> None:
  _number(train.num_steps, "train.num_steps", minimum=1, integer=True)
  for k in ("log_every", "eval_every", "checkpoint_every"):
    _number(train[k], f"train.{k}", minimum=0, integer=True)


def check_mesh(mesh) -> None:
  n = jax.device_count()
  fsdp = _number(mesh.get("fsdp", 1), "mesh.fsdp", minimum=1, integer=True)
  data = _number(mesh.get("data", -1), "mesh.data", minimum=-1, integer=True)
  if data == 0 or n % fsdp or (data != -1 and data * fsdp != n):
    raise ConfigError(f"config.mesh: data={data} x fsdp={fsdp} does not match {n} devices")


def check_checkpoint(ckpt) -> None:
  _number(ckpt.max_to_keep, "checkpoint.max_to_keep", minimum=1, integer=True)
  _choice(ckpt.best_mode, "checkpoint.best_mode", BEST_MODES)


def check_wandb(wandb) -> None:
  _choice(wandb.mode, "wandb.mode", WANDB_MODES)


def check_init(init) -> None:
  parse_init_source(init)     # the source's form; the file itself is read before compilation


def check_config(config) -> None:
  """Runs every section's validator (and the top-level keys); raises ConfigError naming the key."""
  _number(config.seed, "seed", minimum=0, integer=True)
  _number(config.image_size, "image_size", minimum=32, integer=True)
  fm = config.face_model
  if not isinstance(fm, str) or not fm:
    raise ConfigError(f"config.face_model must be a name or a file, got {fm!r}")
  if fm not in available_face_models() and not pathlib.Path(fm).expanduser().exists():
    raise ConfigError(f"config.face_model: {fm} does not exist ({', '.join(available_face_models())} "
                      "or a model file)")
  _choice(config.get("normals", "auto"), "normals", NORMAL_MODES)
  for name, check in (("model", check_model), ("loss", check_loss), ("fit", check_fit),
                      ("render", check_render),
                      ("data", check_data), ("eval", check_eval), ("optim", check_optim),
                      ("train", check_train),
                      ("mesh", check_mesh), ("checkpoint", check_checkpoint),
                      ("wandb", check_wandb), ("init", check_init)):
    if name in config:
      check(config[name])
  _check_across_sections(config)


def _check_across_sections(config) -> None:
  """Settings that are valid alone but contradict each other."""
  data, loss = config.get("data"), config.get("loss")
  if data is None:
    return
  aug = data.get("augment")
  if (loss is not None and float(loss.get("shape_3d", 0.0)) > 0 and aug is not None
      and aug.get("enabled", True) and float(aug.get("flip_prob", 0.0)) > 0):
    # shift, scale and rotation leave the face's shape as it was; a mirror image shows another one
    raise ConfigError("config.data.augment.flip_prob: a flipped crop no longer shows the "
                      "ground-truth shape the loss.shape_3d term compares with; set "
                      "data.augment.flip_prob=0 or loss.shape_3d=0")
  for key in ("data", "eval"):
    section = config.get(key)
    synth = section.get("synthetic") if section is not None else None
    if synth is not None and synth.get("framing", "true") == "detector":
      try:
        load_calibration(config.face_model)
      except ValueError as e:
        raise ConfigError(f"config.{key}.synthetic.framing: {e}") from e
