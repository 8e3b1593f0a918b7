"""The training run: one readable loop that composes the stages (it owns none of them).

    config -> checks -> mesh -> datasets -> train state -> (resume) -> steps [log, eval, checkpoint]
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import signal
import time
from typing import Optional

import jax
import numpy as np

from data_pipelines.device import to_device
from data_pipelines.pipeline import make_pipeline
from data_pipelines.tfds_builders import load_prepared
from msma_jax import camera as cam
from msma_jax.face_model import load_face_model
from msma_jax.train import data as train_data
from msma_jax.train.checkpoint import Checkpointer
from msma_jax.train.config_checks import ConfigError, check_config
from msma_jax.train.distributed import maybe_initialize_distributed
from msma_jax.train.evaluator import Evaluator
from msma_jax.train.mesh import batch_sharding, make_mesh
from msma_jax.train.init import parse_init_source
from msma_jax.train.state import create_train_state, initial_model
from msma_jax.train.step import device_batch_keys, make_train_step
from msma_jax.train.tracking import Tracker, image_panel

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunResult:
  workdir: pathlib.Path
  final_step: int
  interrupted: bool
  eval_metrics: dict
  skipped_steps: list
  wall_seconds: float
  wandb_dir: Optional[str]
  stop_signal: Optional[int] = None   # SIGINT / SIGTERM number when this process was signalled
  # Steady-state training speed: steps after the first (which compiles) over the time they took,
  # eval and checkpoint saves left out. None when fewer than two steps ran in this process.
  steps_per_s: Optional[float] = None


class _StopFlag:
  """Set by SIGTERM/SIGINT (preemption): the loop saves a checkpoint and exits cleanly."""

  def __init__(self):
    self.requested = False
    self.signum: Optional[int] = None    # which signal asked (the exit status is 128 + it)
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: rely on the caller
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    self.signum = signum
    log.warning("signal %d: saving a checkpoint and stopping", signum)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def all_processes(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


def train(config, workdir: str | pathlib.Path, *, resume: Optional[bool] = None) -> RunResult:
  """Trains `config` in `workdir`. resume: True (must resume), False (must start fresh), None
  (resume when `workdir` holds checkpoints)."""
  t0 = time.perf_counter()
  maybe_initialize_distributed(config.get("distributed"))
  check_config(config)
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)

  face_model = load_face_model(config.face_model, normals=config.get("normals", "auto"))
  camera = cam.Camera.for_face_model(face_model, int(config.image_size))
  mesh = make_mesh(config.mesh)
  # Whether this run resumes is known before anything heavy: a resumed run ignores config.init,
  # and an init source that does not load fails before datasets are built or steps compiled.
  ckpt = Checkpointer(workdir / "checkpoints", config.checkpoint)
  have = ckpt.latest_step() is not None
  if resume and not have:
    raise FileNotFoundError(f"{workdir}: --resume given but no checkpoint found")
  if have and resume is False:
    raise FileExistsError(f"{workdir} already holds checkpoints; resume or choose another workdir")
  model, init_report = initial_model(config, face_model, with_init=not have)
  if init_report is not None:
    log.info("%s", init_report.table())
  elif have and parse_init_source(config.get("init")) is not None:
    log.info("resuming from %s: config.init.source is not used", ckpt.directory)
  train_dir = train_data.ensure_dataset(config.data, config.face_model, int(config.image_size))
  source = load_prepared(train_dir, config.data.get("split", "train"))
  steps_per_epoch = max(1, len(source) // int(config.data.global_batch_size))
  total_steps = int(config.train.num_steps)
  ts = create_train_state(config, model, mesh, total_steps, steps_per_epoch)
  # config.seed moves the data order and augmentation too, so a seed sweep varies both sources
  # of run-to-run spread (the default, seed 0, keeps data.seed's order).
  data_seed = int(config.data.get("seed", 0)) + int(config.seed)
  iterator = iter(make_pipeline(source, config.data, seed=data_seed,
                                image_size=int(config.image_size)))
  start = 0
  if have:
    ts.state, meta = ckpt.restore(ts.state, ts.shardings, iterator)
    start = int(meta["step"])

  identity_fn = _identity_loss(config)
  train_step = make_train_step(ts, face_model, camera, config, mesh, identity_fn)
  evaluator = None
  if config.eval.enabled:
    eval_dir = train_data.ensure_dataset(config.eval, config.face_model, int(config.image_size))
    evaluator = Evaluator(train_data.eval_batches(eval_dir, config.eval, int(config.image_size)),
                          ts, face_model, camera, config, mesh)
  tracker = Tracker(workdir, config, total_steps, start)
  meta = {"config": config.to_dict(), "process_count": jax.process_count(),
          "face_model": config.face_model, "image_size": int(config.image_size),
          "coefficient_sizes": list(face_model.sizes)}
  sharding = batch_sharding(mesh)
  with_coeffs = float(config.loss.get("shape_3d", 0.0)) > 0
  t = config.train
  eval_metrics, skipped, interrupted, step, steps_per_s = {}, [], False, start, None

  last_eval = None
  # Seconds spent outside the steady-state steps (first step, evals, checkpoint saves): the
  # sweep's equal-wall-time budget scales steps by the speed of the steps alone.
  timing = {"aside": 0.0, "loop_start": None}

  def run_eval(step):
    nonlocal eval_metrics, last_eval
    last_eval = step
    t_eval = time.perf_counter()
    eval_metrics, panel = evaluator(ts.state)
    tracker.log(step, eval_metrics)
    tracker.log_images(step, image_panel(*panel), "eval/panel")
    ckpt.save_best(step, ts.state, iterator, meta, eval_metrics)
    timing["aside"] += time.perf_counter() - t_eval

  # The NaN guard's flag of a step is read after the next step has been dispatched: reading it at
  # once would make the host wait for every step before it fetches the next batch.
  pending = []

  def report_skipped():
    while pending:
      done_step, records, flag = pending.pop()
      if int(flag):
        keys = np.asarray(records).tolist()
        skipped.append({"step": done_step, "records": keys})
        tracker.message(f"step {done_step}: non-finite loss or gradient, update skipped "
                        f"(records {keys})")

  with _StopFlag() as stop, jax.set_mesh(mesh):
    for step in range(start + 1, total_steps + 1):
      batch = next(iterator)
      if with_coeffs and "coeffs" not in batch:
        raise ConfigError(f"config.loss.shape_3d: {config.data.path} has no ground-truth "
                          "coefficients (only synthetic datasets do); set loss.shape_3d=0")
      device_batch = to_device(device_batch_keys(batch, with_coeffs), sharding)
      ts.state, metrics = train_step(ts.state, device_batch)
      if step == start + 1:                              # compiled and dispatched: clock starts
        jax.block_until_ready(metrics)
        timing["loop_start"] = time.perf_counter()
      report_skipped()                                   # the previous step's
      pending.append((step, batch.get("index", []), metrics["train/skipped"]))
      if step == total_steps or (t.eval_every and step % t.eval_every == 0) or (
          t.checkpoint_every and step % t.checkpoint_every == 0):
        report_skipped()
      if t.log_every and (step % t.log_every == 0 or step == total_steps):
        metrics = jax.device_get(metrics)
        metrics["train/learning_rate"] = float(ts.schedule(step - 1))
        tracker.log(step, metrics)
      if evaluator is not None and t.eval_every and step % t.eval_every == 0:
        run_eval(step)
      if t.checkpoint_every and step % t.checkpoint_every == 0:
        t_save = time.perf_counter()
        ckpt.save(step, ts.state, iterator, meta)
        timing["aside"] += time.perf_counter() - t_save
      tracker.advance(step)
      if stop.all_processes():
        report_skipped()
        ckpt.save(step, ts.state, iterator, meta, force=True)
        interrupted = True
        tracker.message(f"stopped at step {step}: checkpoint saved in {ckpt.directory}")
        steps_per_s = _steady_speed(timing, step - start - 1)
        break
    else:
      steps_per_s = _steady_speed(timing, step - start - 1)
      # Also when a finished run is started again: its report needs the final numbers.
      if evaluator is not None and last_eval != total_steps:
        run_eval(total_steps)
      if ckpt.latest_step() != total_steps:
        ckpt.save(total_steps, ts.state, iterator, meta, force=True)
  ckpt.wait()
  ckpt.close()
  wandb_dir = tracker.close()
  return RunResult(workdir, step, interrupted, eval_metrics, skipped, time.perf_counter() - t0,
                   wandb_dir, stop.signum if interrupted else None, steps_per_s)


def _steady_speed(timing: dict, steps: int) -> Optional[float]:
  """Steps per second of `steps` steps after the first, from `timing` (see train())."""
  if steps < 1 or timing["loop_start"] is None:
    return None
  seconds = time.perf_counter() - timing["loop_start"] - timing["aside"]
  return steps / seconds if seconds > 0 else None


def _identity_loss(config):
  name = config.loss.get("identity_network", "none")
  if name == "none" or not config.loss.identity:
    return None
  from msma_jax.models.identity import make_identity_loss
  loss = make_identity_loss(name)
  params = loss.params
  return lambda rendered, photos, landmarks: loss(params, rendered, photos, landmarks)
