"""The `msma-jax reconstruct` job: inputs -> Reconstructor -> files per face, summary.

Pictures stream through: each picture's files are written as soon as its batch is done, so an
interrupted or failing run keeps everything finished before. A picture that cannot be read, has no
face, or fails in reconstruction or export is reported in one line and counted; the run goes on.
`summary.json` in the output folder lists what was done and what was skipped, and why, and
whether the run was interrupted (Ctrl-C or SIGTERM: `"interrupted": "SIGINT"`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import signal
import sys
import time
from typing import Callable, Optional, Sequence

from tqdm.auto import tqdm

from msma_jax.cli_checks import Interrupted
from msma_jax.inference.inputs import (FAILURE_REASONS, InputError, count_items, expand_inputs,
                                       iter_items)
from msma_jax.inference.result import parse_outputs

SUMMARY_FILE = "summary.json"


class FailureCounts:
  """Failure bookkeeping of a run summary (a dataclass with `failed` {reason: count} over
  FAILURE_REASONS and `messages` [str]): one line per failure, counts per reason."""

  @property
  def num_failed(self) -> int:
    return sum(self.failed.values())

  def add_failure(self, e: InputError) -> None:
    self.failed[e.reason] += 1
    self.messages.append(str(e))

  @staticmethod
  def failure_lines(failed: dict) -> list[str]:
    return [f"  failed, {FAILURE_REASONS[k]}: {n}" for k, n in failed.items() if n]


def reporter(log: Optional[Callable[[str], None]]) -> Callable[[str], None]:
  """Where a run's one-line messages go: `log`, or stderr above the progress bars."""
  if log is not None:
    return log
  return lambda msg: tqdm.write(msg, file=sys.stderr)


@contextlib.contextmanager
def recorded(summary, path: pathlib.Path, t0: float):
  """Runs a job's body; however it ends, `summary` gets its wall time since `t0` and, when Ctrl-C
  or SIGTERM stopped it, `interrupted` ("SIGINT" / "SIGTERM"), and its `to_dict()` is written to
  `path` -- so everything finished before is accounted for."""
  try:
    yield summary
  except KeyboardInterrupt:
    summary.interrupted = "SIGINT"
    raise
  except Interrupted as e:
    summary.interrupted = signal.Signals(e.signum).name
    raise
  finally:
    summary.seconds = time.perf_counter() - t0
    path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")


@dataclasses.dataclass
class RunSummary(FailureCounts):
  """What a reconstruct run did: pictures read, faces written, failures per reason."""
  pictures: int = 0
  pictures_done: int = 0
  faces: int = 0
  files: int = 0
  failed: dict = dataclasses.field(default_factory=lambda: {k: 0 for k in FAILURE_REASONS})
  messages: list = dataclasses.field(default_factory=list)
  done: list = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  interrupted: Optional[str] = None     # "SIGINT" / "SIGTERM" when the run was stopped

  def format(self) -> str:
    lines = [f"pictures: {self.pictures}, reconstructed: {self.pictures_done} "
             f"({self.faces} faces, {self.files} files), failed: {self.num_failed} "
             f"[{self.seconds:.1f} s]" + (f", interrupted ({self.interrupted})"
                                          if self.interrupted else "")]
    return "\n".join(lines + self.failure_lines(self.failed))

  def to_dict(self) -> dict:
    return {"pictures": self.pictures, "pictures_done": self.pictures_done, "faces": self.faces,
            "files": self.files, "failed": {k: v for k, v in self.failed.items() if v},
            "messages": self.messages, "done": self.done, "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted}


def run_reconstruct(inputs: Sequence[str], out_dir: str | pathlib.Path, *,
                    reconstructor=None, outputs: Optional[str | Sequence[str]] = None,
                    every: int = 1, texture_size: int = 512, progress: bool = True,
                    sheet: Optional[str | pathlib.Path] = None, sheet_count: int = 16,
                    log: Callable[[str], None] | None = None, **reconstructor_args) -> RunSummary:
  """Reconstructs every face of `inputs` (files, folders, globs, videos) into `out_dir`.

  reconstructor: a `Reconstructor` (else one is built from `reconstructor_args`); outputs: what to
  write per face (`result.parse_outputs`); every: keep every K-th video frame; sheet: also write
  a contact sheet PNG of the first `sheet_count` faces (`sheet.write_sheet`). Failures are
  printed through `log` (default: stderr, above the progress bar) as they happen.
  """
  from msma_jax.inference.reconstruct import Reconstructor
  t0 = time.perf_counter()
  outputs = parse_outputs(outputs)
  if every < 1:
    raise ValueError(f"--every must be >= 1, got {every}")
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  rec = reconstructor or Reconstructor(progress=progress, **reconstructor_args)
  if "texture" in outputs and rec.face_model.uv is None:
    raise ValueError(f"--save texture: face model {rec.face_model.name!r} has no texture "
                     "coordinates")
  sources = expand_inputs(inputs, exclude=[out])   # never re-read this run's own outputs
  if not sources:
    raise ValueError("no inputs given")
  summary = RunSummary()
  sheet_faces = []
  total = count_items(sources, every)
  bar = tqdm(total=total, desc="reconstruct", unit="picture", disable=not progress,
             dynamic_ncols=True)

  say = reporter(log)
  with recorded(summary, out / SUMMARY_FILE, t0):
    try:
      for item, result in rec.reconstruct_many(iter_items(sources, every)):
        summary.pictures += 1
        bar.update(1)
        if isinstance(result, InputError):
          summary.add_failure(result)
          say(f"skipped: {result}")
          continue
        written, error = [], None
        for face in result:
          try:
            paths = face.save(out, item.stem, outputs, texture_size=texture_size)
          except Exception as e:            # disk full, unwritable folder, ...: this face only
            error = InputError("failed", f"{item.name}: face {face.face_index}: export failed "
                                         f"({type(e).__name__}: {e})")
            break
          if sheet and len(sheet_faces) < sheet_count:
            sheet_faces.append(face)
          written.append({"face": face.face_index,
                           "pose_deg": [round(float(v), 3) for v in face.pose],
                           "quality": face.fit.get("quality"),
                           "files": [str(p.relative_to(out)) for p in paths.values()]})
          summary.files += len(paths)
        summary.faces += len(written)
        if result and result[0].faces_found > len(result):
          say(f"note: {item.name}: {result[0].faces_found} faces found, reconstructed "
              f"{len(result)} (--select all for every face)")
        if error is not None:
          summary.add_failure(error)
          say(f"skipped: {error}")
        else:
          summary.pictures_done += 1
        if written:
          summary.done.append({"input": item.name, "faces": written})
        bar.set_postfix(faces=summary.faces, failed=summary.num_failed)
      if sheet and sheet_faces:
        from msma_jax.inference.sheet import write_sheet
        write_sheet(sheet_faces, sheet)
    finally:
      bar.close()
  return summary
