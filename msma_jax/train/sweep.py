"""`msma-jax sweep SWEEP.yaml`: runs a W&B sweep definition's grid locally, one run after another.

The YAML is the file `wandb sweep` takes (method grid; `command` with `${args}`; `parameters` with
`values` lists). Each grid point becomes `msma-jax train <fixed args> --<param>=<value> ...` in the
workdir template's `{run}`, named by the point's values. On top of the grid:

- seeds: `--seeds N` sets `config.seed` to 0..N-1 (or give `config.seed` values in the YAML);
- one W&B group per sweep (the YAML's `name`; `WANDB_RUN_GROUP`), offline when no key is set;
- finished points are skipped on a rerun (report.json and the same resolved config), also when
  another sweep under the same root already trained that exact config (one run, two studies);
- a failed point is reported and the others are still run and summarised (exit status 1);
  `--summarise` trains nothing and summarises what is finished (an interrupted study so far);
- `--equal-time`: after the grid, every point that is not the reference runs again for the wall
  time of the reference's steps: steps x its measured steps/s / the reference's (same setting);
- the summary in `<runs>/<name>_summary/` (`sweep_summary.md`, `sweep_summary.csv`, per-run
  `sweep_runs.csv`, a plot `sweep_summary.png`): mean ± standard deviation over seeds per point and eval metric, the
  difference to the `--reference` point with a 95 % Welch t interval, steps/s and wall time.

Runs share a JAX compilation cache (`<root>/.jax_cache`, unless JAX_COMPILATION_CACHE_DIR is set),
so the seeds of a point compile once.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import pathlib
import subprocess
import sys
from typing import Optional

import numpy as np
import yaml
from scipy import stats

from msma_jax.train.main import parse_train_args, run_name_from_overrides

SEED_KEY = "config.seed"
BUDGET_KEY = "budget"        # not a config key: "steps" (the YAML's) or "equal_time"
POINT_FILE = "sweep_point.json"
NOT_RUN = "not run (--summarise)"
SUMMARY_METRICS = ("eval/landmark_nme", "eval/vertex_mm", "eval/photometric")


class SweepError(ValueError):
  pass


@dataclasses.dataclass
class Sweep:
  name: str
  fixed: list          # train args every run gets (from the YAML's command)
  grid: list           # [{param: value}] in grid order


def load_sweep(path: str | pathlib.Path, seeds: Optional[int] = None) -> Sweep:
  """Reads a grid sweep YAML; `seeds` replaces any `config.seed` values by 0..seeds-1."""
  path = pathlib.Path(path)
  if not path.exists():
    raise SweepError(f"{path}: sweep file not found")
  if not path.is_file():
    raise SweepError(f"{path}: not a file")
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
  params = dict(spec.get("parameters") or {})
  for name, p in params.items():
    if not isinstance(p, dict) or not isinstance(p.get("values"), list) or not p["values"]:
      raise SweepError(f"{path}: parameter {name} needs a non-empty `values` list for a grid")
  if seeds is not None:
    if seeds < 1:
      raise SweepError(f"--seeds {seeds}: must be at least 1")
    params[SEED_KEY] = {"values": list(range(seeds))}
  names = list(params)
  combos = itertools.product(*(params[n]["values"] for n in names))
  return Sweep(str(spec.get("name") or path.stem), fixed,
               [dict(zip(names, combo)) for combo in combos])


def parse_reference(text: Optional[str], sweep: Sweep) -> dict:
  """`key=value,key=value` (keys as in the YAML, `config.` optional) -> {param: value}."""
  if not text:
    return {}
  params = set(sweep.grid[0]) if sweep.grid else set()
  out = {}
  for part in text.split(","):
    key, sep, value = part.strip().partition("=")
    if key not in params and f"config.{key}" in params:
      key = f"config.{key}"
    if not sep or key not in params:
      raise SweepError(f"--reference {text}: {part.strip()!r} is not `param=value` with a swept "
                       f"param ({', '.join(sorted(params))})")
    out[key] = value
  if not any(all(_format(p[k]) == v for k, v in out.items()) for p in sweep.grid):
    raise SweepError(f"--reference {text}: no grid point has these values")
  return out


def _format(value) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


def _overrides(point: dict) -> list:
  """The `--config.x=value` flags of a point (its budget is not a config key)."""
  return [f"--{k}={_format(v)}" for k, v in point.items() if k != BUDGET_KEY]


def _point_name(point: dict) -> str:
  return run_name_from_overrides(_overrides(point)) + (
      ",budget=equal_time" if point.get(BUDGET_KEY) == "equal_time" else "")


def _last_flag(args: list, flag: str) -> Optional[str]:
  values = [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]
  return values[-1] if values else None


def _fingerprint(config) -> str:
  """Hash of a resolved run config (W&B settings left out: they do not change the result)."""
  d = config.to_dict()
  d.pop("wandb", None)
  return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _train_args(sweep: Sweep, extra: list, point: dict, num_steps: Optional[int] = None) -> list:
  overrides = _overrides(point)
  args = [a for a in [*sweep.fixed, *extra] if not a.startswith("--workdir=")]
  if num_steps is not None:
    overrides.append(f"--config.train.num_steps={num_steps}")
  return [*args, *overrides]


def _finished(workdir: pathlib.Path, fingerprint: str) -> Optional[dict]:
  """The report of a finished run of exactly this config in `workdir`, else None."""
  try:
    point = json.loads((workdir / POINT_FILE).read_text())
    report = json.loads((workdir / "report.json").read_text())
  except (OSError, ValueError):
    return None
  if point.get("fingerprint") != fingerprint or report.get("interrupted"):
    return None
  return report


def _other_run(workdir: pathlib.Path, fingerprint: str) -> Optional[str]:
  """Why `workdir` cannot take this point's run (it holds another config's), or None. An
  interrupted run of the same config is resumed by train."""
  try:
    recorded = json.loads((workdir / POINT_FILE).read_text()).get("fingerprint")
  except OSError:
    recorded = None
  except ValueError:
    return f"has an unreadable {POINT_FILE}"
  if recorded is not None and recorded != fingerprint:
    return "holds a run of another config (other train flags after `--`?)"
  if recorded is None and (workdir / "checkpoints").exists():
    return "holds checkpoints of a run this sweep did not start"
  return None


def _find_same_config(root: pathlib.Path, fingerprint: str) -> Optional[pathlib.Path]:
  """Another finished run of the same resolved config under `root` (e.g. a study's reference
  point that a second sweep shares)."""
  if not root.is_dir():
    return None
  for f in sorted(root.glob(f"*/{POINT_FILE}")):
    if _finished(f.parent, fingerprint) is not None:
      return f.parent
  return None


def _run_point(sweep, extra, point, template, env, dry_run, label, num_steps=None,
               train: bool = True) -> dict:
  """Trains one point unless finished (or `train` is False) -> a row {run, params..., status,
  metrics...}."""
  name = _point_name(point)
  workdir = pathlib.Path(template.replace("{run}", name))
  args = _train_args(sweep, extra, point, num_steps)
  row = {"run": name, **{k: _format(v) for k, v in point.items()}, "status": "ok"}
  print(f"{label} {name}: msma-jax train {' '.join(args)} --workdir={workdir}", flush=True)
  if dry_run:
    row["status"] = "dry run"
    return row
  try:
    config = parse_train_args([*args, f"--workdir={workdir}"]).config
  except ValueError as e:
    row["status"] = f"failed: {e}"
    print(f"  failed: {e}", flush=True)
    return row
  fingerprint = _fingerprint(config)
  report = _finished(workdir, fingerprint)
  if report is not None:
    print("  already finished, skipped", flush=True)
  else:
    same = _find_same_config(workdir.parent, fingerprint)
    if same is not None:
      report = _finished(same, fingerprint)
      row["run"] = f"{name} (= {same.name})"
      print(f"  same config as {same}, finished: reused", flush=True)
    elif not train:
      row["status"] = NOT_RUN
      print(f"  {NOT_RUN}", flush=True)
      return row
    else:
      conflict = _other_run(workdir, fingerprint)
      if conflict:
        row["status"] = f"failed: {workdir} {conflict}; use another --workdir or remove it"
        print(f"  {row['status']}", flush=True)
        return row
      workdir.mkdir(parents=True, exist_ok=True)
      record = {"sweep": sweep.name, "point": row, "args": args, "fingerprint": fingerprint}
      (workdir / POINT_FILE).write_text(json.dumps(record, indent=1))
      code = subprocess.call([sys.executable, "-m", "msma_jax.cli", "train", *args,
                              f"--workdir={workdir}"], env=env)
      report = _finished(workdir, fingerprint) if code == 0 else None
      if report is None:
        row["status"] = f"failed: exit status {code}"
        print(f"  failed with exit status {code}", flush=True)
        return row
  row.update({k: v for k, v in report.get("eval", {}).items() if isinstance(v, (int, float))})
  row.update(steps=report.get("final_step"), steps_per_s=report.get("steps_per_s"),
             wall_s=report.get("wall_seconds"))
  return row


def run_sweep(path, *, dry_run: bool = False, extra: Optional[list] = None,
              seeds: Optional[int] = None, reference: Optional[str] = None,
              equal_time: bool = False, summarise_only: bool = False) -> int:
  """Runs (or with `summarise_only`, only summarises what is finished of) a sweep; exit status."""
  sweep = load_sweep(path, seeds)
  ref = parse_reference(reference, sweep)
  if equal_time and not ref:
    raise SweepError("--equal-time needs --reference (whose steps set the wall-time budget)")
  extra = list(extra or [])
  template = _last_flag([*sweep.fixed, *extra], "--workdir")
  if not template or "{run}" not in template:
    raise SweepError(f"{path}: the command's --workdir must contain {{run}} (one folder per point)")
  root = pathlib.Path(template).parent
  env = {**os.environ, "WANDB_RUN_GROUP": sweep.name}
  env.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / ".jax_cache"))
  grid = [{**p, BUDGET_KEY: "steps"} for p in sweep.grid]
  train = not summarise_only
  rows = [_run_point(sweep, extra, p, template, env, dry_run, f"[{i}/{len(grid)}]", train=train)
          for i, p in enumerate(grid, 1)]
  if equal_time:
    todo = _equal_time_steps(grid, rows, ref)
    rows += [_run_point(sweep, extra, {**p, BUDGET_KEY: "equal_time"}, template, env, dry_run,
                        f"[equal time {i}/{len(todo)}, {n} steps]", n, train=train)
             for i, (p, n) in enumerate(todo, 1)]
  if dry_run:
    return 0
  summary = summarise(rows, ref)
  out = summary_dir(root, sweep.name)
  write_summary(out, sweep.name, rows, summary, ref)
  failed = [r for r in rows if r["status"] not in ("ok", NOT_RUN)]
  print((out / "sweep_summary.md").read_text())
  return 1 if failed else 0


def _group_key(row_or_point: dict) -> tuple:
  """A point without its seed (the seeds of a point are averaged)."""
  return tuple((k, _format(v)) for k, v in row_or_point.items()
               if k not in (SEED_KEY, "run", "status") and (k.startswith("config.") or k == BUDGET_KEY))


def _reference_key(key: tuple, ref: dict) -> tuple:
  """The reference point of `key`'s setting: the reference's values, the others as in `key`,
  at the YAML's steps."""
  return tuple((k, ref.get(k, v) if k != BUDGET_KEY else "steps") for k, v in key)


def _equal_time_steps(grid, rows, ref) -> list:
  """[(point without budget, steps)] for each non-reference point with a measured speed."""
  speed, steps = {}, {}
  for r in rows:
    if r["status"] == "ok" and r.get("steps_per_s"):
      speed.setdefault(_group_key(r), []).append(r["steps_per_s"])
      steps[_group_key(r)] = r["steps"]
  out = []
  for p in grid:
    key = _group_key(p)
    rkey = _reference_key(key, ref)
    if key == rkey or key not in speed or rkey not in speed:
      continue
    n = round(steps[rkey] * np.mean(speed[key]) / np.mean(speed[rkey]))
    out.append(({k: v for k, v in p.items() if k != BUDGET_KEY}, max(1, int(n))))
  return out


def welch_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
  """mean(a) - mean(b) and its `level` Welch t interval (unequal variances); NaN bounds when
  either side has fewer than two values."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  d = float(a.mean() - b.mean())
  if len(a) < 2 or len(b) < 2:
    return d, math.nan, math.nan
  if a.var() == 0 and b.var() == 0:         # no spread: scipy answers NaN, the difference is exact
    return d, d, d
  ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(level)
  return d, float(ci.low), float(ci.high)


def summarise(rows: list, ref: dict, metrics=SUMMARY_METRICS) -> list:
  """Per point (seeds pooled): n, mean/std per metric, difference to the reference with a 95 %
  interval, mean steps, steps/s and wall time. Failed rows are left out (write_summary lists them)."""
  groups: dict = {}
  for r in rows:
    if r["status"] == "ok":
      groups.setdefault(_group_key(r), []).append(r)
  out = []
  for key, members in groups.items():
    s = {"point": dict(key), "n": len(members)}
    rkey = _reference_key(key, ref) if ref else None
    for m in metrics:
      vals = [x[m] for x in members if isinstance(x.get(m), (int, float))]
      if not vals:
        continue
      s[m] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan)
      if rkey is not None and rkey in groups and rkey != key:
        rvals = [x[m] for x in groups[rkey] if isinstance(x.get(m), (int, float))]
        if rvals:
          s[f"{m} diff"] = welch_interval(vals, rvals)
    for k in ("steps", "steps_per_s", "wall_s"):
      vals = [x[k] for x in members if isinstance(x.get(k), (int, float))]
      s[k] = float(np.mean(vals)) if vals else math.nan
    s["is_reference"] = rkey == key
    out.append(s)
  return out


def _label(point: dict) -> str:
  parts = [f"{k.split('.')[-1]}={v}" for k, v in point.items() if k != BUDGET_KEY]
  return ", ".join(parts) + (" [equal time]" if point.get(BUDGET_KEY) == "equal_time" else "")


def _fmt(x, digits=4) -> str:
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def summary_dir(root: pathlib.Path, name: str) -> pathlib.Path:
  """Where a sweep's summary goes: beside its runs, one folder per sweep (sweeps may share runs)."""
  return root / f"{name}_summary"


def write_summary(out: pathlib.Path, name: str, rows: list, summary: list, ref: dict) -> None:
  """sweep_summary.md / .csv (per point), sweep_runs.csv (per run), sweep_summary.png (plot)."""
  out.mkdir(parents=True, exist_ok=True)
  metrics = [m for m in SUMMARY_METRICS if any(m in s for s in summary)]
  keys = list(dict.fromkeys(k for r in rows for k in r))
  with open(out / "sweep_runs.csv", "w", newline="") as f:
    w = csv.DictWriter(f, keys)
    w.writeheader()
    w.writerows(rows)
  csv_rows = []
  for s in summary:
    row = {**s["point"], "n": s["n"], "reference": s["is_reference"]}
    for m in metrics:
      if m in s:
        row[f"{m} mean"], row[f"{m} std"] = s[m]
      if f"{m} diff" in s:
        row[f"{m} diff"], row[f"{m} diff lo95"], row[f"{m} diff hi95"] = s[f"{m} diff"]
    row.update(steps=s["steps"], steps_per_s=s["steps_per_s"], wall_s=s["wall_s"])
    csv_rows.append(row)
  ckeys = list(dict.fromkeys(k for r in csv_rows for k in r))
  with open(out / "sweep_summary.csv", "w", newline="") as f:
    w = csv.DictWriter(f, ckeys)
    w.writeheader()
    w.writerows(csv_rows)

  ref_text = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in ref.items()) or "none"
  head = ["point", "seeds"] + [f"{m.split('/')[-1]} (mean ± sd)" for m in metrics]
  if ref:
    head += [f"Δ {m.split('/')[-1]} [95 % CI]" for m in metrics]
  head += ["steps", "steps/s", "wall (min)"]
  lines = [f"# Sweep {name}", "",
           f"Mean ± standard deviation over seeds; Δ = point − reference ({ref_text}) in the same "
           "setting, with a 95 % Welch t interval (n/a below two seeds a side).", "",
           "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for s in summary:
    cells = [_label(s["point"]) + (" **(reference)**" if s["is_reference"] else ""),
             str(s["n"])]
    cells += [f"{_fmt(s[m][0])} ± {_fmt(s[m][1], 2)}" if m in s else "" for m in metrics]
    if ref:
      cells += [(lambda d: f"{d[0]:+.3g} [{_fmt(d[1], 3)}, {_fmt(d[2], 3)}]")(s[f"{m} diff"])
                if f"{m} diff" in s else "" for m in metrics]
    cells += [_fmt(s["steps"]), _fmt(s["steps_per_s"], 3), _fmt(s["wall_s"] / 60, 3)]
    lines.append("| " + " | ".join(cells) + " |")
  failed = [r for r in rows if r["status"] != "ok"]
  if failed:
    lines += ["", f"Failed or not run points ({len(failed)}, not in the table):", ""]
    lines += [f"- {r['run']}: {r['status']}" for r in failed]
  (out / "sweep_summary.md").write_text("\n".join(lines) + "\n")
  if summary and metrics:
    plot_summary(out / "sweep_summary.png", summary, metrics)


def plot_summary(path: pathlib.Path, summary: list, metrics: list) -> None:
  """One panel per metric: each point's mean with its seed standard deviation as error bars."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  labels = [_label(s["point"]) for s in summary]
  fig, axes = plt.subplots(1, len(metrics), figsize=(4 + 3.2 * len(metrics), 0.35 * len(labels) + 1.8),
                           squeeze=False)
  y = np.arange(len(labels))
  for ax, m in zip(axes[0], metrics):
    mean = np.array([s[m][0] if m in s else np.nan for s in summary])
    sd = np.array([s[m][1] if m in s else np.nan for s in summary])
    colors = ["tab:red" if s["is_reference"] else "tab:blue" for s in summary]
    ax.errorbar(mean, y, xerr=np.nan_to_num(sd), fmt="none", ecolor="grey", capsize=3)
    ax.scatter(mean, y, c=colors, zorder=3)
    ax.set_title(m)
    ax.set_yticks(y)
    ax.set_yticklabels(labels if ax is axes[0][0] else [], fontsize=7)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
