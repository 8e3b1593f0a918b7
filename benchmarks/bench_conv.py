"""3x3 convolutions on the CPU: XLA's convolution against msma_jax's "matmul" forms, per layer shape.

    python benchmarks/bench_conv.py [--repeats 7] [--no-torch]

Times forward + backward (gradients of both input and kernel) of one 3x3 convolution for ResNet
layer shapes (batch, map size, channels in, channels out, stride), through `lax.conv_general_dilated`
("xla") and through `msma_jax.models.conv.conv2d(impl="matmul")` (which gathers patches into one
matrix product on output maps of <= PATCH_CONV_MAX_PIXELS pixels and uses XLA's convolution
otherwise), and PyTorch's convolution (channels_last, `torch.set_num_threads(2)`) as the peer.
Best of --repeats, milliseconds.
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout, not an install

import jax
import jax.numpy as jnp
import numpy as np

from msma_jax.models.conv import PATCH_CONV_MAX_PIXELS, conv2d
from timing import time_calls

SHAPES = [  # (batch, map size, C_in, C_out, stride): ResNet-18 at 64²/96²/128², ResNet-50 at 224²
    (16, 2, 512, 512, 1), (16, 4, 256, 512, 2), (16, 3, 512, 512, 1), (16, 6, 256, 512, 2),
    (16, 4, 256, 256, 1), (16, 8, 128, 128, 1), (8, 7, 512, 512, 1), (8, 14, 256, 512, 2),
    (8, 14, 256, 256, 1), (8, 56, 64, 64, 1),
]


def best_ms(fn, repeats: int) -> float:
  return 1e3 * time_calls(fn, repeats).best


def jax_ms(impl: str, x, w, stride: int, repeats: int) -> float:
  def loss(a, b):
    return jnp.sum(conv2d(a, b, stride, impl=impl))
  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  return best_ms(lambda: step(x, w), repeats)


def torch_ms(x, w, stride: int, repeats: int) -> float:
  import torch
  torch.set_num_threads(2)
  xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  wt = torch.tensor(np.asarray(w)).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
  xt.requires_grad_(True)
  wt.requires_grad_(True)

  def step():
    xt.grad = wt.grad = None
    torch.nn.functional.conv2d(xt, wt, stride=stride, padding=1).sum().backward()
  return best_ms(step, repeats)        # step returns None: block_until_ready passes it through


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--no-torch", action="store_true")
  args = ap.parse_args()
  print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, JAX {jax.__version__} {jax.default_backend()}, load {os.getloadavg()[0]:.2f}")
  print("| batch | map | C_in -> C_out | stride | output | xla (ms) | matmul form (ms) | form | "
        "PyTorch (ms) |")
  print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
  rng = np.random.default_rng(0)
  for b, size, ci, co, stride in SHAPES:
    x = jnp.asarray(rng.normal(size=(b, size, size, ci)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, ci, co)) * 0.05, jnp.float32)
    out = (size - 1) // stride + 1
    form = "patches" if out * out <= PATCH_CONV_MAX_PIXELS else "xla"
    peer = "-" if args.no_torch else f"{torch_ms(x, w, stride, args.repeats):.1f}"
    print(f"| {b} | {size}² | {ci} -> {co} | {stride} | {out}² | {jax_ms('xla', x, w, stride, args.repeats):.1f} | "
          f"{jax_ms('matmul', x, w, stride, args.repeats):.1f} | {form} | {peer} |")


if __name__ == "__main__":
  main()
