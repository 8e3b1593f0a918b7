"""Orbax checkpoints of a training run, as named items.

Each step folder holds one Orbax item per concern:

    params        the encoder's trainable parameters (nnx.Param), a nested dict of arrays
    batch_stats   the encoder's batch-norm running statistics (every other model variable)
    optimizer     the optimizer's state (moments and its step counter)
    data          this process's Grain iterator position
    meta          JSON: step, the run's config, face model, image size, coefficient sizes, format

so a model is read from `params` + `batch_stats` alone (`load_model`, `config.init`) without building
an optimizer. Two `CheckpointManager`s live under `<workdir>/checkpoints`: `latest/` keeps the last
`config.checkpoint.max_to_keep` steps (periodic, final and preemption saves), `best/` the one with the
best eval metric (`config.checkpoint.best_metric`, `best_mode` min or max). Saves are asynchronous
and atomic (Orbax writes to a temporary folder and renames it when complete, so a run killed
mid-save resumes from the previous one).

Restoring reads the arrays into the current mesh's shardings, so a run resumes on any device count.
The data iterator state is per JAX process: with the same process count the data stream continues
exactly; with another count it restarts (a warning says so). A step whose files are damaged is named
with its item; resuming falls back to the newest intact step and says so.

Checkpoints written before the named items (one `state` item holding `(model, optimizer)`) still
load as models (`load_model`, `config.init`); resuming one is refused with a line saying so.
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Optional

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx, traverse_util
from jax.experimental import multihost_utils

from msma_jax.face_model import CoefficientSizes
from msma_jax.models import build_model

log = logging.getLogger(__name__)

FORMAT = 2                       # meta["format"]: 2 = named items; 1 (absent) = one `state` item
ARRAY_ITEMS = ("params", "batch_stats", "optimizer")
MODEL_ITEMS = ("params", "batch_stats")
ITEMS = ARRAY_ITEMS + ("data", "meta")
LEGACY_ITEM = "state"


class CheckpointLoadError(ValueError):
  """A checkpoint that cannot serve the requested use (the message names it)."""


class LegacyCheckpointError(CheckpointLoadError):
  """A checkpoint of the format before named items: it loads as a model but cannot be resumed."""


# -- the train state <-> named items ----------------------------------------------------------------

def _param_paths(model_state) -> set[tuple]:
  params, _ = model_state.split(nnx.Param, ...)
  return set(traverse_util.flatten_dict(nnx.to_pure_dict(params)))


def _split_model(pure_model: dict, param_paths: set[tuple]) -> dict[str, dict]:
  flat = traverse_util.flatten_dict(pure_model)
  return {"params": traverse_util.unflatten_dict({k: v for k, v in flat.items()
                                                  if k in param_paths}),
          "batch_stats": traverse_util.unflatten_dict({k: v for k, v in flat.items()
                                                       if k not in param_paths})}


def join_model_items(items: dict) -> dict:
  flat = {**traverse_util.flatten_dict(dict(items["params"])),
          **traverse_util.flatten_dict(dict(items.get("batch_stats") or {}))}
  return traverse_util.unflatten_dict(flat)


def state_items(state, tree=None) -> dict[str, dict]:
  """The named array items of a train state (`(model, optimizer)` nnx.State). `tree`: an optional
  pytree of the same structure (e.g. abstract arrays) to split instead of the state's values."""
  tree = nnx.to_pure_dict(state) if tree is None else tree
  return {**_split_model(tree[0], _param_paths(state[0])), "optimizer": tree[1]}


def model_items(model_state, tree=None) -> dict[str, dict]:
  """`params` / `batch_stats` of an encoder's nnx.State (or of `tree` shaped like it)."""
  tree = nnx.to_pure_dict(model_state) if tree is None else tree
  return _split_model(tree, _param_paths(model_state))


def _abstract(pure: dict, shardings: dict) -> dict:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      pure, shardings)


def _on_one_device(metadata_tree) -> dict:
  """Restore targets for every array of a saved tree, on this process's first device."""
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                      metadata_tree)


class Checkpointer:
  def __init__(self, directory: str | pathlib.Path, config):
    self.directory = pathlib.Path(directory).absolute()
    self.best_metric = config.best_metric
    self.best_mode = config.best_mode
    common = dict(enable_async_checkpointing=bool(config.async_save), create=True)
    self.latest = ocp.CheckpointManager(
        self.directory / "latest",
        options=ocp.CheckpointManagerOptions(max_to_keep=int(config.max_to_keep), **common),
        item_names=ITEMS)
    self.best = None
    if self.best_metric:
      self.best = ocp.CheckpointManager(
          self.directory / "best",
          options=ocp.CheckpointManagerOptions(
              max_to_keep=1, best_fn=lambda m: float(m[self.best_metric]),
              best_mode=self.best_mode, keep_checkpoints_without_metrics=False, **common),
          item_names=ITEMS)

  # -- saving -------------------------------------------------------------------------------------
  def _args(self, state, iterator, meta: dict):
    arrays = {k: ocp.args.StandardSave(v) for k, v in state_items(state).items()}
    return ocp.args.Composite(**arrays, data=grain.checkpoint.CheckpointSave(iterator),
                              meta=ocp.args.JsonSave({**meta, "format": FORMAT}))

  def save(self, step: int, state, iterator, meta: dict, *, force: bool = False) -> bool:
    """Periodic / final save into `latest/` (async)."""
    return self.latest.save(step, args=self._args(state, iterator, {**meta, "step": step}),
                            force=force)

  def save_best(self, step: int, state, iterator, meta: dict, metrics: dict) -> bool:
    """Offers an evaluated checkpoint to `best/` (kept only if its metric is the best so far)."""
    if self.best is None or self.best_metric not in metrics:
      return False
    return self.best.save(step, args=self._args(state, iterator, {**meta, "step": step}),
                          metrics={k: float(v) for k, v in metrics.items()})

  def wait(self) -> None:
    self.latest.wait_until_finished()
    if self.best is not None:
      self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    if self.best is not None:
      self.best.close()

  # -- restoring ----------------------------------------------------------------------------------
  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def _restore_step(self, step: int, targets: dict) -> dict:
    """The named items of one step, each restored on its own so a failure names its item."""
    step_dir = pathlib.Path(self.latest.directory) / str(step)
    if (step_dir / LEGACY_ITEM).is_dir() and not (step_dir / "params").is_dir():
      raise LegacyCheckpointError(
          f"{step_dir}: written by an older msma-jax (one 'state' item); it loads as a model "
          "(reconstruct --checkpoint, config.init.source='run:...') but cannot be resumed: "
          "start a new workdir with --config.init.source=run:" + str(step_dir))
    out = {}
    for name in ARRAY_ITEMS + ("meta",):
      args = (ocp.args.JsonRestore() if name == "meta"
              else ocp.args.StandardRestore(targets[name]))
      try:
        out[name] = getattr(self.latest.restore(step, args=ocp.args.Composite(**{name: args})),
                            name)
      except Exception as e:  # Orbax/TensorStore raise many types for missing or damaged files
        raise CheckpointLoadError(f"{step_dir / name}: damaged or incomplete checkpoint item "
                                  f"({type(e).__name__}: {_first_line(e)})") from e
    return out

  def restore(self, state_template, shardings, iterator) -> tuple[Any, dict]:
    """Restores the newest intact step of `latest/` into the structure and shardings of
    `state_template` and, when the process count matches, the data iterator (in place).

    Returns (state, meta). A damaged newest step is skipped with a warning naming its item; if no
    step is intact, raises CheckpointLoadError naming the newest one's problem.
    """
    targets = state_items(state_template, _abstract(nnx.to_pure_dict(state_template),
                                                    nnx.to_pure_dict(shardings)))
    steps = sorted(self.latest.all_steps(), reverse=True)
    if not steps:
      raise CheckpointLoadError(f"{self.latest.directory}: no checkpoint to restore")
    first_error = None
    for step in steps:
      try:
        restored = self._restore_step(step, targets)
        if iterator is not None:
          self._restore_iterator(step, iterator, restored["meta"])
      except LegacyCheckpointError:
        raise
      except CheckpointLoadError as e:
        first_error = first_error or e
        log.warning("%s; trying the previous step", e)
        continue
      if first_error is not None:
        self._set_aside([s for s in steps if s > step])
        log.warning("resuming from step %d, the newest intact checkpoint", step)
      state = jax.tree.map(lambda x: x, state_template)
      nnx.replace_by_pure_dict(state, {0: join_model_items(restored),
                                       1: restored["optimizer"]})
      return state, dict(restored["meta"])
    raise CheckpointLoadError(f"{first_error} (no older intact step in {self.latest.directory})")

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged steps to `<step>.damaged` (kept for inspection, invisible to Orbax) so the
    resumed run can save those steps again."""
    root = pathlib.Path(self.latest.directory)
    if jax.process_index() == 0:
      for step in steps:
        target = root / f"{step}.damaged"
        n = 1
        while target.exists():
          target, n = root / f"{step}.damaged{n}", n + 1
        (root / str(step)).rename(target)
        log.warning("moved the damaged step %d to %s", step, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoint set aside")
    self.latest.reload()

  def _restore_iterator(self, step: int, iterator, meta: dict) -> None:
    saved_processes = meta.get("process_count", jax.process_count())
    if saved_processes != jax.process_count():
      log.warning("checkpoint was written by %d processes, now %d: the data iterator restarts",
                  saved_processes, jax.process_count())
      return
    try:
      self.latest.restore(step, args=ocp.args.Composite(
          data=grain.checkpoint.CheckpointRestore(iterator)))
    except Exception as e:  # a missing or damaged iterator file
      raise CheckpointLoadError(f"{pathlib.Path(self.latest.directory) / str(step) / 'data'}: "
                                f"damaged or incomplete checkpoint item ({type(e).__name__}: "
                                f"{_first_line(e)})") from e


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return text[0][:200] if text else type(e).__name__


# -- finding and reading a run's model --------------------------------------------------------------

def _is_step(p: pathlib.Path) -> bool:
  return p.name.isdigit() and ((p / "params").is_dir() or (p / LEGACY_ITEM).is_dir())


def find_checkpoint(path: str | pathlib.Path, which: str = "best") -> pathlib.Path:
  """Resolves a run directory, its `checkpoints/`, a `latest/`/`best/` folder or a step folder to a
  step folder. which: "best" (falls back to latest) or "latest"."""
  p = pathlib.Path(path).expanduser().absolute()      # Orbax restores from absolute paths only
  if not p.exists():
    raise CheckpointLoadError(f"{p}: checkpoint not found")
  if (p / "meta").is_dir() and ((p / "params").is_dir() or (p / LEGACY_ITEM).is_dir()):
    return p
  for root in (p, p / "checkpoints"):
    for name in ((which, "latest") if which == "best" else (which,)):
      d = root / name
      steps = sorted((int(s.name), s) for s in d.glob("*") if _is_step(s)) if d.is_dir() else []
      if steps:
        return steps[-1][1]
  steps = sorted((int(s.name), s) for s in p.glob("*") if _is_step(s))
  if steps:
    return steps[-1][1]
  raise CheckpointLoadError(f"{p}: no msma-jax checkpoint here (expected a run directory, "
                            "checkpoints/{latest,best}/<step> or a step folder)")


def read_meta(step_dir: pathlib.Path) -> dict:
  try:
    return json.loads((step_dir / "meta" / "metadata").read_text())
  except (OSError, ValueError) as e:
    raise CheckpointLoadError(f"{step_dir / 'meta'}: unreadable checkpoint metadata ({e})") from e


def read_model_arrays(step_dir: pathlib.Path) -> dict[str, dict]:
  """`params` and `batch_stats` of a step folder as nested dicts of arrays on the first device,
  whatever the topology it was saved on. Legacy checkpoints (one `state` item) are read from that
  item's model part. Raises CheckpointLoadError naming a damaged item."""
  ckptr = ocp.StandardCheckpointer()

  def restore(item: pathlib.Path):
    try:
      return ckptr.restore(item, _on_one_device(ckptr.metadata(item).item_metadata.tree))
    except Exception as e:  # Orbax/TensorStore raise many types for missing or damaged files
      raise CheckpointLoadError(f"{item}: damaged or incomplete checkpoint item "
                                f"({type(e).__name__}: {_first_line(e)})") from e

  if (step_dir / "params").is_dir():
    return {name: restore(step_dir / name) for name in MODEL_ITEMS}
  if (step_dir / LEGACY_ITEM).is_dir():
    tree = restore(step_dir / LEGACY_ITEM)
    model = tree.get("0", tree.get(0))
    if model is None:
      raise CheckpointLoadError(f"{step_dir / LEGACY_ITEM}: no model part in this checkpoint")
    return {"legacy_model": model}
  raise CheckpointLoadError(f"{step_dir}: no 'params' item (not an msma-jax checkpoint step)")


def _keyed_like(tree, template):
  """`tree` (restored, possibly with str keys for int ones) re-keyed like `template`."""
  if not isinstance(template, dict):
    return tree
  out = {}
  for k, v in template.items():
    src = tree[k] if k in tree else tree[str(k)]
    out[k] = _keyed_like(src, v)
  return out


def model_from_arrays(model, arrays: dict[str, dict]) -> None:
  """Writes `read_model_arrays`' output into `model` (an encoder of the same structure), in place."""
  state = nnx.state(model)
  template = nnx.to_pure_dict(state)
  pure = arrays["legacy_model"] if "legacy_model" in arrays else join_model_items(arrays)
  pure = _keyed_like(pure, template)
  flat = traverse_util.flatten_dict(pure)
  for path, want in traverse_util.flatten_dict(template).items():
    got = flat[path]
    if tuple(got.shape) != tuple(want.shape):
      raise ValueError(f"tensor {'/'.join(map(str, path))} has shape {tuple(got.shape)}, the "
                       f"model expects {tuple(want.shape)}")
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)


def load_model(path: str | pathlib.Path, *, which: str = "best", face_model=None):
  """The trained encoder of a checkpoint, in inference mode, on the default device.

  Returns (model, meta): meta holds the run's config dict, face model name, image size and
  coefficient sizes. `face_model` (optional FaceModel) is checked against the checkpoint: a
  checkpoint trained for another face model raises CheckpointLoadError naming both. Only the
  `params` and `batch_stats` items are read; no optimizer is built.
  """
  step_dir = find_checkpoint(path, which)
  meta = read_meta(step_dir)
  sizes = tuple(meta.get("coefficient_sizes", ()))
  if face_model is not None and sizes and tuple(face_model.sizes) != sizes:
    raise CheckpointLoadError(
        f"{step_dir}: trained for face model {meta.get('face_model')!r} with coefficient sizes "
        f"{sizes}, not {face_model.name!r} {tuple(face_model.sizes)}")
  config = ml_collections.ConfigDict(meta["config"])
  arrays = read_model_arrays(step_dir)
  model = build_model(config.model, CoefficientSizes(*sizes), seed=0)
  try:
    model_from_arrays(model, arrays)
  except (KeyError, ValueError, TypeError) as e:   # arrays that do not fit the run's own config
    raise CheckpointLoadError(f"{step_dir}: could not restore the encoder ({type(e).__name__}: "
                              f"{e})") from e
  model.eval()
  return model, meta
