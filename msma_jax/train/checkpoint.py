"""Orbax checkpoints of a training run: model + optimizer state, step, Grain iterator, metadata.

Two `CheckpointManager`s under `<workdir>/checkpoints`: `latest/` keeps the last
`config.checkpoint.max_to_keep` checkpoints (periodic, final and preemption saves), `best/` keeps the
one with the best eval metric (`config.checkpoint.best_metric`, `best_mode` min or max). Saves are
asynchronous (training continues while arrays are written) and atomic (Orbax writes to a temporary
directory and renames it when complete, so a run killed mid-save resumes from the previous one).

Restoring reads the arrays directly into the current mesh's shardings, so a run can resume on a
different number of devices. The data iterator state is per JAX process: resuming with the same
process count continues the data stream exactly; with another count the data position restarts
(a warning says so).
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx

log = logging.getLogger(__name__)


def _pure(state) -> dict:
  return nnx.to_pure_dict(state)


class Checkpointer:
  def __init__(self, directory: str | pathlib.Path, config):
    self.directory = pathlib.Path(directory).absolute()
    self.best_metric = config.get("best_metric", "")
    self.best_mode = config.get("best_mode", "min")
    common = dict(enable_async_checkpointing=bool(config.get("async_save", True)), create=True)
    self.latest = ocp.CheckpointManager(
        self.directory / "latest",
        options=ocp.CheckpointManagerOptions(max_to_keep=int(config.get("max_to_keep", 3)),
                                             **common),
        item_names=("state", "data", "meta"))
    self.best = None
    if self.best_metric:
      self.best = ocp.CheckpointManager(
          self.directory / "best",
          options=ocp.CheckpointManagerOptions(
              max_to_keep=1, best_fn=lambda m: float(m[self.best_metric]),
              best_mode=self.best_mode, keep_checkpoints_without_metrics=False, **common),
          item_names=("state", "data", "meta"))

  # -- saving -------------------------------------------------------------------------------------
  def _args(self, state, iterator, meta: dict):
    return ocp.args.Composite(state=ocp.args.StandardSave(_pure(state)),
                              data=grain.checkpoint.CheckpointSave(iterator),
                              meta=ocp.args.JsonSave(meta))

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

  def restore(self, state_template, shardings, iterator, step: Optional[int] = None,
              which: str = "latest") -> tuple[Any, dict]:
    """Restores into the structure/shardings of `state_template` and, if possible, the iterator.

    Returns (state, meta). `iterator` is updated in place.
    """
    mngr = self.latest if which == "latest" else self.best
    step = mngr.latest_step() if step is None else step
    if which == "best" and step is None and mngr is not None:
      step = mngr.best_step()
    if step is None:
      raise FileNotFoundError(f"{mngr.directory}: no checkpoint to restore")
    pure = _pure(state_template)
    pure_shardings = _pure(shardings)
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          pure, pure_shardings)
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    meta = dict(restored.meta)
    saved_processes = meta.get("process_count", jax.process_count())
    if iterator is not None:
      if saved_processes == jax.process_count():
        mngr.restore(step, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(iterator)))
      else:
        log.warning("checkpoint was written by %d processes, now %d: the data iterator restarts",
                    saved_processes, jax.process_count())
    state = jax.tree.map(lambda x: x, state_template)
    nnx.replace_by_pure_dict(state, restored.state)
    return state, meta


class CheckpointLoadError(ValueError):
  """A checkpoint that cannot serve the requested use (the message names it)."""


def find_checkpoint(path: str | pathlib.Path, which: str = "best") -> pathlib.Path:
  """Resolves a run directory, its `checkpoints/`, a `latest/`/`best/` folder or a step folder to a
  step folder. which: "best" (falls back to latest) or "latest"."""
  p = pathlib.Path(path).expanduser().absolute()      # Orbax restores from absolute paths only
  if not p.exists():
    raise CheckpointLoadError(f"{p}: checkpoint not found")
  if (p / "state").is_dir() and (p / "meta").is_dir():
    return p
  for root in (p, p / "checkpoints"):
    for name in ((which, "latest") if which == "best" else (which,)):
      d = root / name
      steps = sorted((int(s.name), s) for s in d.glob("*") if s.name.isdigit()
                     and (s / "state").is_dir()) if d.is_dir() else []
      if steps:
        return steps[-1][1]
  steps = sorted((int(s.name), s) for s in p.glob("*") if s.name.isdigit() and (s / "state").is_dir())
  if steps:
    return steps[-1][1]
  raise CheckpointLoadError(f"{p}: no msma-jax checkpoint here (expected a run directory, "
                            "checkpoints/{latest,best}/<step> or a step folder)")


def load_model(path: str | pathlib.Path, *, which: str = "best", face_model=None):
  """The trained encoder of a checkpoint, in inference mode, on the default device.

  Returns (model, meta): meta holds the run's config dict, face model name, image size and
  coefficient sizes. `face_model` (optional FaceModel) is checked against the checkpoint: a
  checkpoint trained for another face model raises CheckpointLoadError naming both.
  """
  import ml_collections
  from msma_jax.models import build_model
  step_dir = find_checkpoint(path, which)
  try:
    meta = json.loads((step_dir / "meta" / "metadata").read_text())
  except (OSError, ValueError) as e:
    raise CheckpointLoadError(f"{step_dir}: unreadable checkpoint metadata ({e})") from e
  sizes = tuple(meta.get("coefficient_sizes", ()))
  if face_model is not None and sizes and tuple(face_model.sizes) != sizes:
    raise CheckpointLoadError(
        f"{step_dir}: trained for face model {meta.get('face_model')!r} with coefficient sizes "
        f"{sizes}, not {face_model.name!r} {tuple(face_model.sizes)}")
  config = ml_collections.ConfigDict(meta["config"])
  from msma_jax.face_model import CoefficientSizes
  from msma_jax.train.optim import make_optimizer
  tx, _ = make_optimizer(config.optim, 1, 1)

  def make():
    model = build_model(config.model, CoefficientSizes(*sizes), seed=0)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

  abstract_model, abstract_opt = nnx.eval_shape(make)
  graphdef, abstract = nnx.split((abstract_model, abstract_opt))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        _pure(abstract))
  try:
    pure = ocp.StandardCheckpointer().restore(step_dir / "state", target)
  except Exception as e:  # a checkpoint whose arrays do not fit this config
    raise CheckpointLoadError(f"{step_dir}: could not restore the encoder ({type(e).__name__}: "
                              f"{e})") from e
  nnx.replace_by_pure_dict(abstract, pure)
  model, _ = nnx.merge(graphdef, abstract)
  model.eval()
  return model, meta
