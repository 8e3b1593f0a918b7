"""The one error path of the `msma-jax` command line: every argument is checked before work starts.

* `OneLineParser` turns argparse's usage block + message into one line (`msma-jax X: error: ...`).
* `check_args(args)` applies `RULES[command]` (ranges, finiteness) and the path checks of that
  command (`--out` that is a file, a sheet path that is a folder or not an image file, ...), raising
  `UsageError` whose message names the option and what is wrong. It imports nothing heavy, so a bad
  argument is answered in about a second, before JAX or TFDS load.
* `Interrupted` / `on_sigterm()`: SIGTERM is raised as an exception like Ctrl-C is, so that batch
  commands write their summary (saying `interrupted`) on the way out; `main()` answers one line and
  exit status 130 (SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import signal
from typing import Callable, Optional

# Exit statuses: 2 = the command line or an input cannot work (nothing done); 128 + signal number
# for a run stopped by a signal (the shell's convention: 130 Ctrl-C, 143 SIGTERM).
EXIT_USAGE = 2
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM

IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")


class UsageError(ValueError):
  """An argument that cannot work; the message (one line) names the option and what is wrong."""


class Interrupted(BaseException):
  """A run stopped by SIGINT or SIGTERM. A BaseException, like KeyboardInterrupt, so that the
  `except Exception` of per-item error handling does not swallow it; `signum` gives the exit status."""

  def __init__(self, signum: int):
    super().__init__(f"interrupted by {signal.Signals(signum).name}")
    self.signum = signum

  @property
  def exit_status(self) -> int:
    return 128 + self.signum


def _raise_interrupted(signum, frame):
  del frame
  raise Interrupted(signum)


def on_sigterm() -> None:
  """SIGTERM raises `Interrupted` in the main thread (Ctrl-C already raises KeyboardInterrupt)."""
  try:
    signal.signal(signal.SIGTERM, _raise_interrupted)
  except ValueError:       # not the main thread (an embedding program): leave its handlers alone
    pass


class OneLineParser(argparse.ArgumentParser):
  """argparse with one-line errors: `msma-jax reconstruct: error: argument --batch-size: ...`."""

  def error(self, message: str):
    self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---- value rules ----------------------------------------------------------------------------------
# A rule takes the parsed value (never None: unset optional values are not checked) and returns what
# is wrong with it, or None.
Rule = Callable[[object], Optional[str]]


def at_least(low: float) -> Rule:
  return lambda v: None if v >= low else f"must be >= {low:g}, got {v:g}"


def between(low: float, high: float) -> Rule:
  return lambda v: None if low <= v <= high else f"must be in [{low:g}, {high:g}], got {v:g}"


def finite(rule: Optional[Rule] = None) -> Rule:
  """A float that is neither NaN nor infinite (and passes `rule`)."""
  def check(v):
    if not math.isfinite(v):
      return f"must be a finite number, got {v}"
    return rule(v) if rule else None
  return check


def positive_finite(v) -> Optional[str]:
  return finite(lambda x: None if x > 0 else f"must be > 0, got {x:g}")(v)


_OUTPUT_RULES = {"sheet_count": at_least(1)}
RULES: dict[str, dict[str, Rule]] = {
    "reconstruct": {
        "fit_steps": at_least(0), "landmark_steps": at_least(0), "fit_size": between(32, 4096),
        "texture_size": between(16, 8192), "every": at_least(1), "batch_size": at_least(1),
        "max_faces": at_least(0), "min_score": finite(), "max_failures": at_least(0),
        "smooth": finite(lambda x: None if x >= 0 else f"must be >= 0, got {x:g}"),
        "max_gap": at_least(0), **_OUTPUT_RULES},
    "prepare-data": {
        "max_faces": at_least(0), "min_side": at_least(1), "upsample": between(0, 4),
        "workers": between(0, 256), "synthetic": at_least(0), "jpeg_quality": between(1, 100),
        "max_yaw": finite(between(0, 90)), "max_pitch": finite(between(0, 90)),
        "max_roll": finite(between(0, 90)), "sheet_columns": at_least(1),
        "show_skipped": at_least(0), "max_failures": at_least(0), **_OUTPUT_RULES},
    "evaluate": {
        "batch_size": at_least(1), "per_cell": at_least(1), "limit": at_least(1),
        "crop_radius_mm": positive_finite, "scan_unit_mm": positive_finite,
        "recon_unit_mm": positive_finite},
    "demo": {"num_random": at_least(0), "image_size": between(32, 4096)},
}


def option_name(dest: str) -> str:
  """argparse dest -> the option as typed (`batch_size` -> `--batch-size`)."""
  return "--" + dest.replace("_", "-")


def check_values(command: str, args: argparse.Namespace) -> None:
  for dest, rule in RULES.get(command, {}).items():
    value = getattr(args, dest, None)
    if value is None:
      continue
    problem = rule(value)
    if problem:
      raise UsageError(f"{option_name(dest)} {problem}")


# ---- path rules -----------------------------------------------------------------------------------

def check_output_dir(path: Optional[str], option: str = "--out") -> None:
  """An output folder must be a folder or not exist yet (its parents are created)."""
  if path is None:
    return
  p = pathlib.Path(path).expanduser()
  for q in (p, *p.parents):
    if q.exists() and not q.is_dir():
      what = "is a file" if q == p else f"lies under {q}, which is a file"
      raise UsageError(f"{option} {path}: {what}, not a folder")
    if q.exists():
      return


def check_output_file(path: Optional[str], option: str, suffixes=IMAGE_OUTPUT_SUFFIXES) -> None:
  """An output file: not a folder, a known suffix, and a folder (or nothing) above it."""
  if path is None:
    return
  p = pathlib.Path(path).expanduser()
  if p.is_dir():
    raise UsageError(f"{option} {path}: is a folder; give a file name ({', '.join(suffixes)})")
  if p.suffix.lower() not in suffixes:
    raise UsageError(f"{option} {path}: unknown file type {p.suffix or '(none)'!r}; use "
                     f"{' or '.join(suffixes)}")
  for q in p.parents:        # the nearest existing folder above must be a folder
    if q.exists():
      if not q.is_dir():
        raise UsageError(f"{option} {path}: lies under {q}, which is a file")
      break


def check_input_dir(path: Optional[str], what: str) -> None:
  """An input folder must exist (`what` names it in the message: "source", "BFM")."""
  if path is None:
    return
  p = pathlib.Path(path).expanduser()
  if not p.exists():
    raise UsageError(f"{path}: {what} folder not found")
  if not p.is_dir():
    raise UsageError(f"{path}: the {what} folder is a file")


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
  """Whether `path` is `folder` or lies under it (after resolving links)."""
  p, f = pathlib.Path(path).expanduser().resolve(), pathlib.Path(folder).expanduser().resolve()
  return p == f or f in p.parents


def _check_reconstruct(args) -> None:
  check_output_dir(args.out)
  check_output_file(args.sheet, "--sheet")


def _check_prepare_data(args) -> None:
  check_output_dir(args.out)
  check_output_file(args.contact_sheet, "--contact-sheet")
  if args.synthetic:
    return
  if not args.source:
    raise UsageError("give a SOURCE folder of photos, or --synthetic N")
  check_input_dir(args.source, "source")
  # A sheet written into the photo folder would be read as a photo by the next run.
  if args.contact_sheet and is_inside(args.contact_sheet, args.source):
    raise UsageError(f"--contact-sheet {args.contact_sheet}: lies inside SOURCE {args.source}; "
                     "the next run would read it as a photo")


def _check_evaluate(args) -> None:
  # The dataset folders are checked by each protocol, which knows what they should hold.
  check_output_dir(args.out)


def _check_convert_bfm(args) -> None:
  check_input_dir(args.bfm_dir, "BFM")
  check_output_file(args.out, "--out", suffixes=(".npz", ".mat"))


def _check_demo(args) -> None:
  check_output_dir(args.out)


PATH_CHECKS = {"reconstruct": _check_reconstruct, "prepare-data": _check_prepare_data,
               "evaluate": _check_evaluate, "convert-bfm": _check_convert_bfm, "demo": _check_demo}


def check_args(args: argparse.Namespace) -> None:
  """Validates a parsed command line (values, then paths); raises UsageError naming the option."""
  command = getattr(args, "command", None)
  check_values(command, args)
  if command in PATH_CHECKS:
    PATH_CHECKS[command](args)
