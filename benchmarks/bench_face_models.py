"""What each embedded face model costs: size, mesh, render and training-step time, side by side.

    python benchmarks/bench_face_models.py [--models embedded embedded-ict] [--repeats 5]

Per model: vertices, triangles, coefficients, the asset's bytes; `render_face` at 224² batch 8
(forward, and forward + backward of a plain image sum w.r.t. the coefficients); and the training
step of the CPU quickstart (configs/quickstart.py: ResNet-18 at half width, 64², batch 16) on random
photos, landmarks and skin masks (the step's cost does not depend on the pixel values), with its
render+losses part (decode -> render -> loss terms, forward + backward). Best of `--repeats` calls
after one compile call (other jobs share the machine; noise only adds time).
"""
from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import os
import pathlib
import platform
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from timing import time_calls  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msma_jax import camera as cam  # noqa: E402
from msma_jax.face_model import load_face_model  # noqa: E402
from msma_jax.face_model.io import EMBEDDED_MODELS  # noqa: E402
from msma_jax.inference.demo import random_coefficients  # noqa: E402
from msma_jax.losses import compute_losses  # noqa: E402
from msma_jax.render import render_face  # noqa: E402


def quickstart_config(face_model: str):
  spec = importlib.util.spec_from_file_location("quickstart_config", ROOT / "configs" / "quickstart.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.face_model = face_model
  return config


def render_times(fm, size: int, batch: int, repeats: int) -> tuple[float, float]:
  """(forward s, forward + backward s) of render_face for `batch` random faces at size²."""
  camera = cam.Camera.for_face_model(fm, size)
  coeffs = random_coefficients(fm, jax.random.key(0), batch)
  fwd = jax.jit(lambda c: render_face(fm, c, camera).image)
  grad = jax.jit(jax.grad(lambda c: jnp.sum(render_face(fm, c, camera).image)))
  return time_calls(lambda: fwd(coeffs), repeats).best, time_calls(lambda: grad(coeffs), repeats).best


def train_times(fm, name: str, repeats: int) -> tuple[float, float, int, int]:
  """(full step s, render+losses s, image size, batch) of the quickstart's training step."""
  from msma_jax.train.mesh import batch_sharding, make_mesh
  from msma_jax.train.state import create_train_state, initial_model
  from msma_jax.train.step import make_train_step
  config = quickstart_config(name)
  size, b = int(config.image_size), int(config.data.global_batch_size)
  camera = cam.Camera.for_face_model(fm, size)
  mesh = make_mesh(config.mesh)
  model, _ = initial_model(config, fm, with_init=False)
  ts = create_train_state(config, model, mesh, 1000, 100)
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(size=(b, size, size, 3)).astype(np.float32),
           "landmarks": rng.uniform(0.3 * size, 0.7 * size, size=(b, 68, 2)).astype(np.float32),
           "skin_mask": np.ones((b, size, size), np.float32), "valid": np.ones((b,), np.float32)}
  batch = jax.device_put(batch, batch_sharding(mesh))
  with jax.set_mesh(mesh):
    step = make_train_step(ts, fm, camera, config, mesh)
    holder = {"state": ts.state}

    def full():
      holder["state"], m = step(holder["state"], batch)
      return m
    full_s = time_calls(full, repeats).best
  coeffs = random_coefficients(fm, jax.random.key(1), b)
  losses = jax.jit(jax.grad(lambda c: compute_losses(
      fm, c, {**batch, "landmarks_valid": batch["valid"]}, camera, config.loss)[0]))
  return full_s, time_calls(lambda: losses(coeffs), repeats).best, size, b


def asset_bytes(name: str) -> int:
  ref = importlib.resources.files("msma_jax.assets").joinpath(EMBEDDED_MODELS[name][0])
  with importlib.resources.as_file(ref) as p:
    return p.stat().st_size


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", nargs="+", default=list(EMBEDDED_MODELS))
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--no-train", action="store_true", help="skip the training step")
  args = ap.parse_args()
  unknown = [m for m in args.models if m not in EMBEDDED_MODELS]
  if unknown:
    ap.error(f"unknown embedded face model(s) {unknown} (known: {', '.join(EMBEDDED_MODELS)})")
  print(f"# bench_face_models  jax {jax.__version__}  {platform.processor() or platform.machine()}  "
        f"cpus {os.cpu_count()}  load {os.getloadavg()[0]:.2f}")
  print("| model | vertices | triangles | id / exp / tex | asset MB | render 224² B8 fwd s | "
        "fwd+bwd s | quickstart step s | render+losses s |")
  print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
  for name in args.models:
    fm = load_face_model(name)
    fwd, bwd = render_times(fm, 224, 8, args.repeats)
    step = ("–", "–")
    if not args.no_train:
      full_s, loss_s, size, b = train_times(fm, name, args.repeats)
      step = (f"{full_s:.3f}", f"{loss_s:.3f}")
    s = fm.sizes
    print(f"| {name} | {fm.n_vertices:,} | {fm.n_triangles:,} | {s.id} / {s.exp} / {s.tex} | "
          f"{asset_bytes(name) / 1e6:.2f} | {fwd:.3f} | {bwd:.3f} | {step[0]} | {step[1]} |",
          flush=True)


if __name__ == "__main__":
  main()
