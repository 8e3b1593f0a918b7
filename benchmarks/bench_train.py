"""Training-step speed on this machine, and where the step's time goes.

    python benchmarks/bench_train.py [--config configs/default.py] [--batch 8] [--repeats 5]

For a config (default: `configs/default.py`, MSMA ResNet-50 at 224², embedded face model), times on
random photos, landmarks and skin masks (the step's cost does not depend on the pixel values):

  full step      the jitted train step of `msma-jax train` (forward, losses, backward, optimizer)
  encoder        the encoder alone: forward + backward (VJP of random cotangents) + nothing else
  render+losses  decode -> render -> all loss terms, forward + backward w.r.t. the coefficients
  render         the same render, forward + backward of a plain sum of its image (no loss terms)

The shares are each part's time over the full step's (they overlap with the optimizer's small cost
and do not add up to exactly 100 %). Per device = on the JAX devices the mesh spans (1 CPU device here).
Medians of `--repeats` calls after one compile call.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
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

  from msma_jax import camera as cam
  from msma_jax.face_model import load_face_model
  from msma_jax.losses import compute_losses
  from msma_jax.render import render_face
  from msma_jax.train.mesh import batch_sharding, make_mesh
  from msma_jax.train.state import create_train_state, initial_model
  from msma_jax.train.step import make_train_step

  config = load_config(args.config, args.batch, args.image_size)
  size, b = int(config.image_size), args.batch
  face_model = load_face_model(config.face_model)
  camera = cam.Camera.for_face_model(face_model, size)
  mesh = make_mesh(config.mesh)
  ts = create_train_state(config, initial_model(config, face_model)[0], mesh, 1000, 100)
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(size=(b, size, size, 3)).astype(np.float32),
           "landmarks": rng.uniform(0.3 * size, 0.7 * size, size=(b, 68, 2)).astype(np.float32),
           "skin_mask": np.ones((b, size, size), np.float32),
           "valid": np.ones((b,), np.float32)}
  batch = jax.device_put(batch, batch_sharding(mesh))
  rows = []

  with jax.set_mesh(mesh):
    step = make_train_step(ts, face_model, camera, config, mesh)
    holder = {"state": ts.state}

    def full():
      holder["state"], m = step(holder["state"], batch)
      jax.block_until_ready(m)
    rows.append(("full step", *median_seconds(full, args.repeats)))

    graphdef = ts.graphdef_train
    model, _ = nnx.merge(graphdef, holder["state"])
    params = nnx.state(model)
    model_def = nnx.graphdef(model)

    @jax.jit
    def encoder_vjp(params, images, cot):
      def f(params):
        m = nnx.merge(model_def, params)
        return m(images)
      out, vjp = jax.vjp(f, params)
      return vjp(cot)
    coeffs = nnx.merge(model_def, params)(batch["image"])
    cot = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), coeffs)
    rows.append(("encoder", *median_seconds(
        lambda: jax.block_until_ready(encoder_vjp(params, batch["image"], cot)), args.repeats)))

    coeffs = jax.tree.map(lambda x: x + 0.05 * jnp.asarray(rng.normal(size=x.shape), x.dtype),
                          coeffs)
    render_losses = jax.jit(jax.grad(lambda c: compute_losses(
        face_model, c, {**batch, "landmarks_valid": batch["valid"]}, camera, config.loss)[0]))
    rows.append(("render+losses", *median_seconds(
        lambda: jax.block_until_ready(render_losses(coeffs)), args.repeats)))
    render_only = jax.jit(jax.grad(lambda c: jnp.sum(
        render_face(face_model, c, camera).image * batch["image"])))
    rows.append(("render", *median_seconds(
        lambda: jax.block_until_ready(render_only(coeffs)), args.repeats)))

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
