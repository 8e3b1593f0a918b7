"""Evaluation reports: Markdown + CSV tables, figures, excluded inputs, and a metrics hook (W&B).

Every protocol writes into one output folder:

    report.md       title, settings, tables, figures, and the excluded inputs with their reasons
    <table>.csv     one CSV per table (the same numbers as the Markdown)
    summary.json    settings, flat metrics, exclusion counts
    *.png           figures (cumulative error curves, per-vertex heat maps)

Bad inputs never abort an evaluation: `Report.exclude(reason, message)` prints one line, counts it
under its reason and lists it in the report. `log_fn` receives the flat metrics dict
({"eval/<protocol>/...": value}); pass a W&B run (anything with `.log(dict)`) or any callable.
"""
from __future__ import annotations

import collections
import csv
import json
import math
import pathlib
import sys
from typing import Any, Callable, Optional, Sequence


class NothingToEvaluate(ValueError):
  """No input of a protocol was usable; the message gives the exclusion counts and first reason."""


def as_log_fn(log_fn) -> Optional[Callable[[dict], None]]:
  """None, a callable taking a metrics dict, or a W&B run (its `.log`)."""
  if log_fn is None:
    return None
  if hasattr(log_fn, "log") and callable(log_fn.log):
    return log_fn.log
  if callable(log_fn):
    return log_fn
  raise TypeError(f"log_fn must be a callable or a W&B run, got {type(log_fn).__name__}")


def _fmt(value, fmt: str) -> str:
  if isinstance(value, float):
    return "—" if math.isnan(value) else format(value, fmt)
  return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str], formats: Optional[dict] = None,
                   default_format: str = ".2f") -> str:
  """A GitHub-flavoured Markdown table of `rows` (dicts) in the order of `columns`."""
  formats = formats or {}
  head = "| " + " | ".join(columns) + " |"
  sep = "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(columns))) + " |"
  body = ["| " + " | ".join(_fmt(r.get(c, ""), formats.get(c, default_format)) for c in columns) + " |"
          for r in rows]
  return "\n".join([head, sep, *body])


class Report:
  """Collects what one evaluation produced and writes it to `out_dir`.

  log: where progress lines go (default stderr); log_fn: metrics hook, see `as_log_fn`.
  """

  def __init__(self, out_dir, title: str, *, protocol: str, log: Optional[Callable[[str], None]] = None,
               log_fn=None):
    self.out_dir = pathlib.Path(out_dir)
    self.out_dir.mkdir(parents=True, exist_ok=True)
    self.title = title
    self.protocol = protocol
    self.log = log or (lambda msg: print(msg, file=sys.stderr))
    self.log_fn = as_log_fn(log_fn)
    self.settings: dict[str, Any] = {}
    self.sections: list[str] = []
    self.metrics: dict[str, float] = {}
    self.excluded: dict[str, list[str]] = collections.defaultdict(list)
    self.notes: list[str] = []

  def exclude(self, reason: str, message: str) -> None:
    """One bad input: a clear line now, counted under `reason`, listed in the report."""
    self.excluded[reason].append(message)
    self.log(f"excluded: {message}")

  def require(self, evaluated: int, what: str) -> None:
    """Raises NothingToEvaluate (one line: the exclusion counts and the first reason) when
    `evaluated` is 0, so that no report of empty (NaN) tables is written."""
    if evaluated:
      return
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(self.excluded.items()))
    first = next((v[0] for v in self.excluded.values() if v), None)
    raise NothingToEvaluate(f"nothing to evaluate: no usable {what}"
                            + (f" (excluded: {counts}; first: {first})" if counts else ""))

  def note(self, message: str) -> None:
    self.notes.append(message)
    self.log(message)

  def add_text(self, text: str) -> None:
    self.sections.append(text)

  def add_table(self, name: str, rows: Sequence[dict], columns: Sequence[str], *,
                caption: str = "", formats: Optional[dict] = None,
                markdown: bool = True) -> pathlib.Path:
    """Writes `<name>.csv` (full precision) and, with markdown=True, adds the table to report.md."""
    path = self.out_dir / f"{name}.csv"
    with open(path, "w", newline="") as f:
      w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
      w.writeheader()
      for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    if markdown:
      self.sections.append((f"**{caption}** ([{path.name}]({path.name}))\n\n" if caption else "")
                           + markdown_table(rows, columns, formats))
    return path

  def add_figure(self, path, caption: str) -> None:
    path = pathlib.Path(path)
    self.sections.append(f"![{caption}]({path.name})\n\n*{caption}*")

  def add_metrics(self, metrics: dict[str, float]) -> None:
    """Flat metrics under `eval/<protocol>/`; sent to log_fn at `write()`."""
    for k, v in metrics.items():
      self.metrics[f"eval/{self.protocol}/{k}"] = float(v)

  def write(self) -> pathlib.Path:
    counts = {k: len(v) for k, v in self.excluded.items()}
    lines = [f"# {self.title}", ""]
    if self.settings:
      lines += ["| setting | value |", "| --- | --- |"]
      lines += [f"| {k} | {v} |" for k, v in self.settings.items()]
      lines.append("")
    for s in self.sections:
      lines += [s, ""]
    lines.append("## Excluded inputs")
    lines.append("")
    if not counts:
      lines.append("None.")
    else:
      lines += ["| reason | count |", "| --- | ---: |"]
      lines += [f"| {k} | {n} |" for k, n in sorted(counts.items())]
      lines.append("")
      for reason, messages in sorted(self.excluded.items()):
        lines += [f"- {m}" for m in messages]
    if self.notes:
      lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
    path = self.out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    summary = {"protocol": self.protocol, "title": self.title, "settings": self.settings,
               "metrics": self.metrics, "excluded": counts}
    (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if self.log_fn is not None and self.metrics:
      self.log_fn({**self.metrics, **{f"eval/{self.protocol}/excluded/{k}": n
                                       for k, n in counts.items()}})
    return path
