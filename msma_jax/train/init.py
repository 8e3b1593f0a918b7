"""`config.init`: where a new run's weights start (a resumed run ignores it).

    config.init.source   ""                       random initialisation (default)
                         "torchvision:PATH.pth"   an ImageNet state dict -> the backbone
                         "deep3d:PATH.pth"        Deep3DFaceRecon's epoch_20.pth (`net_recon`) ->
                                                  the backbone, and the heads when the model is
                                                  `deep3d_r50`-like and the face model is a BFM
                         "run:DIR"                an msma-jax run (its checkpoint, any device count)
    config.init.which    best | latest            which step of a run
    config.init.partial  False                    True: load what matches, report the rest

Loading prints one table: tensors loaded (and how many changed layout, "reshaped"), missing from
the source, unused from the source, of the wrong shape, re-initialised heads (the face model
differs: other coefficient counts) and the model's tensors the source does not cover (kept as
initialised, e.g. fusion and attention on top of an ImageNet backbone). Without `partial`, a missing,
unused or wrong-shaped tensor fails with one line naming the first one. Every failure is an
`InitError` naming the file, raised before anything is compiled.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from configs.errors import ConfigError
from msma_jax.models import torch_weights
from msma_jax.models.errors import WeightImportError
from msma_jax.train import checkpoint as ckpt_io

KINDS = ("torchvision", "deep3d", "run")
WHICH = ("best", "latest")


class InitError(ValueError):
  """An init source that cannot be loaded (one line naming the file and the first mismatch)."""


@dataclasses.dataclass(frozen=True)
class InitSource:
  kind: str                # torchvision | deep3d | run
  path: pathlib.Path
  which: str = "best"
  partial: bool = False

  def __str__(self) -> str:
    return f"{self.kind}:{self.path}"


def parse_init_source(init) -> Optional[InitSource]:
  """config.init -> InitSource (None for random initialisation); ConfigError for a malformed one."""
  if init is None:
    return None
  source = init.get("source", "")
  if not isinstance(source, str):
    raise ConfigError(f"config.init.source must be a string, got {source!r}")
  if not source:
    return None
  kind, sep, path = source.partition(":")
  if not sep or kind not in KINDS or not path:
    raise ConfigError(f"config.init.source must be KIND:PATH with KIND one of {', '.join(KINDS)} "
                      f"(e.g. torchvision:resnet50.pth, deep3d:epoch_20.pth, run:runs/quickstart), "
                      f"got {source!r}")
  which = init.get("which", "best")
  if which not in WHICH:
    raise ConfigError(f"config.init.which must be one of {', '.join(WHICH)}, got {which!r}")
  partial = init.get("partial", False)
  if not isinstance(partial, bool):
    raise ConfigError(f"config.init.partial must be True or False, got {partial!r}")
  return InitSource(kind, pathlib.Path(path).expanduser(), which, partial)


@dataclasses.dataclass
class InitReport:
  """What `apply_init` did, by tensor name (the source's names for PyTorch files)."""
  source: str
  loaded: list[str] = dataclasses.field(default_factory=list)
  reshaped: list[str] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)
  unused: list[str] = dataclasses.field(default_factory=list)
  mismatched: list[str] = dataclasses.field(default_factory=list)
  reinitialised: list[str] = dataclasses.field(default_factory=list)
  kept: list[str] = dataclasses.field(default_factory=list)

  def table(self) -> str:
    rows = (("loaded", self.loaded, "copied from the source"),
            ("reshaped", self.reshaped, "of those, layout converted (OIHW->HWIO, [out,in]->[in,out])"),
            ("missing", self.missing, "expected from the source, not in it: kept as initialised"),
            ("unused", self.unused, "in the source, not used"),
            ("wrong shape", self.mismatched, "skipped: kept as initialised"),
            ("reinitialised", self.reinitialised, "heads for another face model"),
            ("not covered", self.kept, "model tensors the source has no layout for"))
    lines = [f"init from {self.source}", f"  {'tensors':14s} {'count':>6s}  examples"]
    for name, items, what in rows:
      if items or name in ("loaded", "missing", "unused"):
        shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
        lines.append(f"  {name:14s} {len(items):6d}  {shown or '-'}   ({what})")
    return "\n".join(lines)


def _variables(model) -> dict[tuple, nnx.Variable]:
  """Every array variable of `model` by its path (the same objects the module holds)."""
  return {tuple(path): node for path, node in nnx.iter_graph(model)
          if isinstance(node, nnx.Variable) and hasattr(node[...], "shape")}


def _name(path: tuple) -> str:
  return "/".join(map(str, path))


def _write(var: nnx.Variable, arr) -> None:
  old = var[...]
  var[...] = jax.device_put(jnp.asarray(arr, old.dtype), old.sharding)


def _torch_init(model, src: InitSource) -> InitReport:
  try:
    state = torch_weights.load_torch_file(src.path)
    if src.kind == "torchvision":
      imp = torch_weights.torchvision_import(model, state)
    else:
      heads = _deep3d_heads_fit(model, state)
      imp = torch_weights.deep3d_import(model, state, heads=heads)
  except WeightImportError as e:
    raise InitError(f"config.init.source {src}: {e}") from e
  m = torch_weights.match_entries(imp.entries, imp.state, ignore=imp.ignore)
  report = InitReport(str(src), [imp.entries[i][0] for i, _ in m.loaded], m.reshaped, m.missing,
                      m.unused, m.mismatched)
  if src.kind == "deep3d" and not heads:
    report.reinitialised = ["heads (net_recon's final_layers do not fit this model's heads)"]
  if m.problems and not src.partial:
    raise InitError(f"config.init.source {src}: {imp.what}: {m.problems[0]}{imp.hint} "
                    f"({len(m.problems)} problem(s); config.init.partial=True loads what matches)")
  covered = {id(var) for _, var, _ in imp.entries}
  report.kept = [_name(p) for p, v in _variables(model).items() if id(v) not in covered]
  torch_weights.write_entries(imp.entries, m.loaded)
  return report


def _deep3d_heads_fit(model, state) -> bool:
  """net_recon's heads load only into a model of its form predicting BFM-sized coefficients."""
  try:
    torch_weights.deep3d_import(model, state, heads=True)
  except WeightImportError:
    return False
  return True


def _run_init(model, src: InitSource, face_sizes) -> InitReport:
  try:
    step_dir = ckpt_io.find_checkpoint(src.path, src.which)
    meta = ckpt_io.read_meta(step_dir)
    arrays = ckpt_io.read_model_arrays(step_dir)
  except ckpt_io.CheckpointLoadError as e:
    raise InitError(f"config.init.source {src}: {e}") from e
  pure = arrays.get("legacy_model") or ckpt_io.join_model_items(arrays)
  source = {_name(k): v for k, v in traverse_util.flatten_dict(pure).items()}
  other_face_model = tuple(meta.get("coefficient_sizes", ())) != tuple(face_sizes)
  report = InitReport(f"{src} (step {meta.get('step', step_dir.name)}, face model "
                      f"{meta.get('face_model')!r})")
  targets = {_name(p): v for p, v in _variables(model).items()}
  writes = []
  for name, var in targets.items():
    if name not in source:
      report.missing.append(name)
    elif tuple(np.shape(source[name])) != tuple(var.shape):
      if other_face_model and name.startswith("heads/"):
        report.reinitialised.append(name)
      else:
        report.mismatched.append(f"{name}: {tuple(np.shape(source[name]))} vs {tuple(var.shape)}")
    else:
      writes.append((var, source[name]))
      report.loaded.append(name)
  report.unused = sorted(k for k in source if k not in targets)
  problems = ([f"missing '{report.missing[0]}'"] if report.missing else []) + (
      [f"'{report.mismatched[0]}'"] if report.mismatched else []) + (
      [f"unexpected '{report.unused[0]}'"] if report.unused else [])
  if problems and not src.partial:
    n = len(report.missing) + len(report.mismatched) + len(report.unused)
    raise InitError(f"config.init.source {src}: {step_dir} does not fit config.model: "
                    f"{problems[0]} ({n} tensor(s) differ; config.init.partial=True loads what "
                    "matches)")
  for var, arr in writes:
    _write(var, arr)
  return report


def apply_init(model, init, face_sizes) -> Optional[InitReport]:
  """Loads `config.init` into `model` (in place); returns the report, or None for random init.

  face_sizes: the coefficient sizes of the run's face model (heads of a run trained for another
  face model are re-initialised).
  """
  src = parse_init_source(init)
  if src is None:
    return None
  if not src.path.exists():
    raise InitError(f"config.init.source {src}: {src.path} not found")
  if src.kind == "run":
    return _run_init(model, src, face_sizes)
  if src.path.is_dir():
    raise InitError(f"config.init.source {src}: {src.path} is a folder, expected a .pth file")
  return _torch_init(model, src)
