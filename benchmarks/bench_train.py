"""Training-step speed on this machine, and where the step's time goes.

    python benchmarks/bench_train.py [--config configs/default.py] [--batch 8] [--repeats 5]

For a config (default: `configs/default.py`, MSMA ResNet-50 at 224², embedded face model), times on
random photos, landmarks and skin masks (the step's cost does not depend on the pixel values):

  full step      the jitted train step of `msma-jax train` (forward, losses, backward, optimizer)
  encoder        the encoder alone: forward + backward (VJP of random cotangents) + nothing else
  render+losses  decode -> render -> all loss terms, forward + backward w.r.t. the coefficients
  render         the same render, forward + backward of a plain sum of its image (no loss terms)

The shares are each part's time over the full step's (they overlap with the optimizer's small cost
and do not add up to exactly 100 %; benchmarks/step_parts.py builds the parts). Per device = on the
JAX devices the mesh spans (1 CPU device here). Medians of `--repeats` calls after one compile call.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
from timing import time_calls  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_seconds(fn, repeats: int) -> tuple[float, float]:
  """(first call incl. compilation, median of the next `repeats`), seconds."""
  t = time_calls(fn, repeats)
  return t.first, t.median

def load_config(spec: str, batch: int, image_size: int = 0):
  import importlib.util
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  config.data.global_batch_size = batch
  if image_size:
    config.image_size = image_size
  return config


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default=str(ROOT / "configs" / "default.py"))
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--image-size", type=int, default=0, help="override config.image_size")
  args = ap.parse_args()
  if args.image_size < 0:
    ap.error(f"--image-size must be positive (or 0: the config's), got {args.image_size}")

  from msma_jax.face_model import load_face_model
  from step_parts import train_parts

  config = load_config(args.config, args.batch, args.image_size)
  size, b = int(config.image_size), args.batch
  mesh, parts = train_parts(config, load_face_model(config.face_model), b)
  with jax.set_mesh(mesh):
    rows = [(name, *median_seconds(parts[name], args.repeats))
            for name in ("full step", "encoder", "render+losses", "render")]

  devices = len(mesh.devices.flat)
  full_s = rows[0][2]
  print(f"\nconfig {args.config} (variant {config.model.get('variant', '?')}), {size}x{size}, "
        f"batch {b}, {devices} device(s) ({jax.devices()[0].platform}), "
        f"face model {config.face_model}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
  print("| part | s / step (median) | share of the step | first call incl. compile (s) |")
  print("| --- | ---: | ---: | ---: |")
  for name, first, med in rows:
    print(f"| {name} | {med:.3f} | {100 * med / full_s:.0f} % | {first:.1f} |")
  print(f"\nfull step: {1 / full_s:.3f} steps/s, {b / full_s:.2f} images/s, "
        f"{b / full_s / devices:.2f} images/s per device")
  print(f"losses alone (render+losses - render): {rows[2][2] - rows[3][2]:.3f} s")


if __name__ == "__main__":
  main()
