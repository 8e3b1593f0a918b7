"""`msma-jax sweep SWEEP.yaml`: runs a W&B sweep definition's grid locally, one run after another.

The YAML is the file `wandb sweep` takes (method grid; `command` with `${args}`; `parameters` with
`values` lists). Each grid point becomes `msma-jax train <fixed args> --<param>=<value> ...`, with
`{run}` in the workdir replaced by the point's name; finished runs (report.json present) are skipped,
so an interrupted sweep continues where it stopped. A summary table (Markdown + CSV) of the final
eval metrics is written at the end.
"""
from __future__ import annotations

import csv
import itertools
import json
import pathlib
import subprocess
import sys

import yaml

from msma_jax.train.main import run_name_from_overrides


class SweepError(ValueError):
  pass


def load_sweep(path: str | pathlib.Path) -> tuple[list[str], list[dict]]:
  """-> (fixed train args, grid points as {param: value})."""
  path = pathlib.Path(path)
  if not path.exists():
    raise SweepError(f"{path}: sweep file not found")
  try:
    spec = yaml.safe_load(path.read_text())
  except yaml.YAMLError as e:
    raise SweepError(f"{path}: not valid YAML ({e})") from e
  if not isinstance(spec, dict) or spec.get("method", "grid") != "grid":
    raise SweepError(f"{path}: only grid sweeps run locally (method: grid)")
  command = [str(a) for a in spec.get("command", [])]
  if "train" not in command:
    raise SweepError(f"{path}: command must run `msma-jax train`")
  fixed = [a for a in command[command.index("train") + 1:] if not a.startswith("${")]
  params = spec.get("parameters") or {}
  names, values = [], []
  for name, p in params.items():
    if not isinstance(p, dict) or "values" not in p:
      raise SweepError(f"{path}: parameter {name} needs a `values` list for a grid")
    names.append(name)
    values.append(list(p["values"]))
  return fixed, [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _format(value) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


def run_sweep(path, *, dry_run: bool = False, extra: list[str] | None = None) -> int:
  fixed, grid = load_sweep(path)
  extra = list(extra or [])
  rows, failed = [], 0
  for i, point in enumerate(grid, 1):
    overrides = [f"--{k}={_format(v)}" for k, v in point.items()]
    args = [*fixed, *extra, *overrides]
    workdir = next((a.split("=", 1)[1] for a in args if a.startswith("--workdir=")), None)
    name = run_name_from_overrides([a for a in args if a.startswith("--config.")])
    report = pathlib.Path(workdir.replace("{run}", name)) / "report.json" if workdir else None
    print(f"[{i}/{len(grid)}] {name}: msma-jax train {' '.join(args)}", flush=True)
    if dry_run:
      continue
    if report is not None and report.exists():
      print("  already finished, skipped", flush=True)
    else:
      code = subprocess.call([sys.executable, "-m", "msma_jax.cli", "train", *args])
      if code:
        failed += 1
        print(f"  failed with exit status {code}", flush=True)
        continue
    if report is not None and report.exists():
      rows.append({"run": name, **point, **json.loads(report.read_text()).get("eval", {})})
  if rows:
    out = report.parent.parent
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "sweep_summary.csv", "w", newline="") as f:
      w = csv.DictWriter(f, keys)
      w.writeheader()
      w.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(f"{r.get(k, ''):.4g}" if isinstance(r.get(k), float) else
                                str(r.get(k, "")) for k in keys) + " |" for r in rows]
    (out / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
  return 1 if failed else 0
