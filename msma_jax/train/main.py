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
import sys

from absl import flags
from ml_collections import config_flags


def parse_train_args(argv: list[str]):
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "training config file (configs/*.py[:arg])",
                                  flag_values=fv, lock_config=True)
  flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, images, wandb)",
                      flag_values=fv)
  flags.DEFINE_boolean("resume", None, "resume from the workdir's checkpoints (default: if any)",
                       flag_values=fv)
  flags.DEFINE_boolean("report", True, "print the final report", flag_values=fv)
  try:
    fv(["msma-jax train", *argv])
  except flags.Error as e:
    raise ValueError(str(e)) from e
  if fv.config is None:
    raise ValueError("--config is required (e.g. --config configs/quickstart.py)")
  if not fv.workdir:
    raise ValueError("--workdir is required (e.g. --workdir runs/quickstart)")
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
  fv = parse_train_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  from msma_jax.train.loop import train
  result = train(fv.config, fv.workdir, resume=fv.resume)
  (result.workdir / "report.json").write_text(json.dumps(
      {"final_step": result.final_step, "interrupted": result.interrupted,
       "eval": result.eval_metrics, "skipped_steps": result.skipped_steps,
       "wall_seconds": result.wall_seconds}, indent=1))
  if fv.report:
    print(format_report(result), file=sys.stderr)
  return 0
