"""`msma-jax train`: command-line entry of the training loop.

    msma-jax train --config configs/quickstart.py --workdir runs/quickstart \\
        [--config.train.num_steps=1000 --config.model.attention.kind=lka ...] [--resume|--noresume]

`--config` takes an ml-collections config file (optionally `file.py:argument`); any field can be
overridden with `--config.<section>.<key>=<value>`. Without --resume/--noresume, a workdir that holds
checkpoints is resumed.
"""
from __future__ import annotations

import json
import logging
import signal
import sys

from absl import flags
from ml_collections import config_flags

from configs.errors import ConfigError
from msma_jax.cli_checks import check_output_dir
from msma_jax.train.config_args import check_config_args


def run_name_from_overrides(overrides: list[str]) -> str:
  """A readable directory name from `--config.a.b.c=value` overrides: "b.c=value,...". The sweep
  runner and `train` both derive it from all `--config.` overrides, so they agree."""
  parts = []
  for o in overrides:
    key, _, value = o.lstrip("-").partition("=")
    parts.append(f"{'.'.join(key.split('.')[-2:])}={value}")
  name = ",".join(parts) or "base"
  return "".join(ch if ch.isalnum() or ch in "=,._-" else "_" for ch in name)


def _train_flags(argv: list[str] | None = None) -> flags.FlagValues:
  """The train flags; `argv` (the arguments after `train`) is where ml-collections looks for the
  `--config.x.y` overrides (it reads sys.argv otherwise, which differs when main() is called with
  its own argv)."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "training config file (configs/*.py[:arg])",
                                  flag_values=fv, lock_config=True,
                                  sys_argv=None if argv is None else ["msma-jax train", *argv])
  flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, images, wandb)",
                      flag_values=fv)
  flags.DEFINE_boolean("resume", None, "resume from the workdir's checkpoints (default: if any)",
                       flag_values=fv)
  flags.DEFINE_boolean("report", True, "print the final report", flag_values=fv)
  return fv


def train_help() -> str:
  """What `msma-jax train --help` prints: usage, the flags, and how configs are overridden."""
  return ("usage: msma-jax train --config FILE[:ARG] --workdir DIR [--config.SECTION.KEY=VALUE ...] "
          f"[--resume | --noresume]\n\n{__doc__.strip()}\n\nflags:\n"
          f"{_train_flags().get_help(include_special_flags=False)}\n")


def parse_train_args(argv: list[str]):
  """The train flags; ConfigError / ValueError (one line naming the flag or file) on a bad one."""
  check_config_args(argv)   # the config file and override keys, before absl's lazy loading
  fv = _train_flags(argv)
  try:
    fv(["msma-jax train", *argv])
  except flags.Error as e:
    raise ValueError(str(e)) from e
  except Exception as e:    # ml-collections raises many types for a bad override value
    raise ConfigError(f"{type(e).__name__}: {e}") from e
  if fv.config is None:
    raise ValueError("--config is required (e.g. --config configs/quickstart.py)")
  if not fv.workdir:
    raise ValueError("--workdir is required (e.g. --workdir runs/quickstart)")
  if "{run}" in fv.workdir:   # sweeps: one directory per combination of overrides
    overrides = [a for a in argv if a.startswith("--config.")]
    fv.workdir = fv.workdir.replace("{run}", run_name_from_overrides(overrides))
  check_output_dir(fv.workdir, "--workdir")    # not a file, nor under one
  return fv


def format_report(result) -> str:
  m = result.eval_metrics
  lines = [f"run: {result.workdir}  (step {result.final_step}, "
           f"{result.wall_seconds / 60:.1f} min{', interrupted' if result.interrupted else ''})"]
  if m:
    lines.append(f"{'metric':18s} {'model':>10s} {'mean face':>10s} {'change':>8s}")
    for key in ("landmark_nme", "vertex_mm", "photometric"):
      if f"eval/{key}" in m:
        a, b = m[f"eval/{key}"], m.get(f"baseline/{key}", float("nan"))
        lines.append(f"{key:18s} {a:10.4f} {b:10.4f} {100 * (a - b) / b:+7.1f}%")
  lines.append(f"checkpoints: {result.workdir / 'checkpoints'}   metrics: "
               f"{result.workdir / 'metrics.jsonl'}   images: {result.workdir / 'images'}")
  if result.wandb_dir:
    lines.append(f"wandb: {result.wandb_dir}")
  if result.skipped_steps:
    lines.append(f"skipped (non-finite) steps: {[s['step'] for s in result.skipped_steps]}")
  return "\n".join(lines)


def run_train(argv: list[str]) -> int:
  if any(a in ("-h", "--help", "--helpfull") for a in argv):
    print(train_help())
    return 0
  fv = parse_train_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("msma_jax").setLevel(logging.INFO)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)    # Orbax logs every save step at INFO
  from msma_jax.train.loop import train
  result = train(fv.config, fv.workdir, resume=fv.resume)
  (result.workdir / "report.json").write_text(json.dumps(
      {"final_step": result.final_step, "interrupted": result.interrupted,
       "eval": result.eval_metrics, "skipped_steps": result.skipped_steps,
       "wall_seconds": result.wall_seconds, "steps_per_s": result.steps_per_s}, indent=1))
  if fv.report:
    print(format_report(result), file=sys.stderr)
  # A run stopped by SIGINT/SIGTERM saved its checkpoint; the status says it did not finish
  # (128 + the signal: 130 Ctrl-C, 143 SIGTERM; 130 when another process was signalled).
  if result.interrupted:
    return 128 + (result.stop_signal or signal.SIGINT)
  return 0
