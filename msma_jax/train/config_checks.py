"""Validation of a training config before anything is compiled: one clear error naming the key."""
from __future__ import annotations

import numbers
import pathlib

import jax

LOSS_WEIGHTS = ("photometric", "landmark", "coeff_reg", "id_reg", "exp_reg", "tex_reg", "gamma",
                "reflectance", "identity", "photometric_eps", "shape_3d")
WANDB_MODES = ("auto", "online", "offline", "disabled")


class ConfigError(ValueError):
  """A config value that cannot work (the message names the key)."""


def _number(value, key: str, *, minimum: float | None = None, integer: bool = False):
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ConfigError(f"config.{key} must be a number, got {type(value).__name__} {value!r}")
  if integer and int(value) != value:
    raise ConfigError(f"config.{key} must be an integer, got {value!r}")
  if minimum is not None and value < minimum:
    raise ConfigError(f"config.{key} must be >= {minimum}, got {value!r}")
  return value


def check_config(config) -> None:
  """Raises ConfigError for values that would fail later (or silently do the wrong thing)."""
  from msma_jax.models import ModelConfigError, spec_from_config
  try:
    spec_from_config(config.model)
  except ModelConfigError as e:
    raise ConfigError(f"config.model: {e}") from e
  except Exception as e:  # a malformed section (wrong types) surfaces here too
    raise ConfigError(f"config.model: {type(e).__name__}: {e}") from e

  for k in LOSS_WEIGHTS:
    if k in config.loss:
      _number(config.loss[k], f"loss.{k}", minimum=0.0)
  from msma_jax.losses import SHAPE_ALIGN
  if config.loss.get("shape_3d_align", "none") not in SHAPE_ALIGN:
    raise ConfigError(f"config.loss.shape_3d_align must be one of {', '.join(SHAPE_ALIGN)}, got "
                      f"{config.loss.shape_3d_align!r}")
  if not isinstance(config.loss.get("identity_network", "none"), str):
    raise ConfigError("config.loss.identity_network must be a string ('none', 'dlib', "
                      "'arcface_onnx:<path>')")

  batch = _number(config.data.global_batch_size, "data.global_batch_size", minimum=1, integer=True)
  n = jax.device_count()
  if batch % n:
    raise ConfigError(f"config.data.global_batch_size={batch} is not divisible by the {n} devices "
                      f"(use a multiple of {n})")
  mesh = config.mesh
  fsdp = _number(mesh.get("fsdp", 1), "mesh.fsdp", minimum=1, integer=True)
  data = _number(mesh.get("data", -1), "mesh.data", minimum=-1, integer=True)
  if n % fsdp or (data != -1 and data * fsdp != n):
    raise ConfigError(f"config.mesh: data={data} x fsdp={fsdp} does not match {n} devices")

  _number(config.image_size, "image_size", minimum=32, integer=True)
  t = config.train
  _number(t.num_steps, "train.num_steps", minimum=1, integer=True)
  for k in ("log_every", "eval_every", "checkpoint_every", "image_every"):
    _number(t[k], f"train.{k}", minimum=0, integer=True)
  _number(config.optim.learning_rate, "optim.learning_rate", minimum=0.0)
  if config.optim.get("name", "adam") not in ("adam", "adamw", "sgd"):
    raise ConfigError(f"config.optim.name: unknown optimizer {config.optim.name!r} "
                      "(adam | adamw | sgd)")
  if config.optim.get("schedule", "constant") not in ("constant", "step", "cosine"):
    raise ConfigError(f"config.optim.schedule: unknown {config.optim.schedule!r} "
                      "(constant | step | cosine)")
  if config.wandb.mode not in WANDB_MODES:
    raise ConfigError(f"config.wandb.mode must be one of {WANDB_MODES}, got {config.wandb.mode!r}")

  for key, section in (("data", config.data), ("eval", config.eval)):
    if key == "eval" and not section.enabled:
      continue
    path = section.path
    synth = section.get("synthetic_if_missing", False)
    if not isinstance(path, str) or not path:
      raise ConfigError(f"config.{key}.path must be a dataset folder, got {path!r}")
    if not synth and not pathlib.Path(path).expanduser().exists():
      raise ConfigError(f"config.{key}.path: {path} does not exist (prepare it with "
                        "`msma-jax prepare-data`, or set synthetic_if_missing=True for synthetic "
                        "faces)")
  fm = config.face_model
  if fm != "embedded" and not pathlib.Path(fm).expanduser().exists():
    raise ConfigError(f"config.face_model: {fm} does not exist ('embedded' or a model file)")
