"""Encoder training-step throughput: JAX variants and the PyTorch ResNet-50 peer, in one run.

One step = forward + backward + Adam update on a batch of random 224 x 224 images, with a mean
squared error against random 257-d targets standing in for the render-and-compare loss (the
encoder's cost does not depend on the loss). Batch norm in training mode. The runners take turns
(round-robin, `--rounds` times) so that load from other work on a shared machine hits them alike;
the table gives the median and the best images/s over rounds (on a shared machine other work only
ever slows a round down, so the best round is the least disturbed measurement).

    python benchmarks/bench_encoder.py                        # r50 and msma_r50 vs PyTorch, batch 8
    python benchmarks/bench_encoder.py --variants r50,msma_r50,r18 --rounds 5 --steps 3

The PyTorch peer is `torch_peer.ReconResNet50` (torchvision ResNet-50 + Deep3DFaceRecon's final
1x1 layers) with torch.set_num_threads(--threads), measured in both memory formats (NCHW, the
default, and channels_last). JAX uses the CPU backend with XLA's default thread pool (one thread per
core; run it on a machine, or under `taskset`, with --threads cores).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import os
import pathlib
import platform
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def load_configs():
  spec = importlib.util.spec_from_file_location("msma_configs_model", ROOT / "configs" / "model.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def jax_runner(variant: str, batch: int, size: int, dtype: str):
  """A function running n training steps of the JAX encoder; returns (run(n), description)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  from msma_jax.face_model import BFM_SIZES
  from msma_jax.models import build_model

  cfg = load_configs().get_model_config(variant)
  cfg.dtype = dtype
  model = build_model(cfg, BFM_SIZES, seed=0)
  model.train()
  optimizer = nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(batch, size, size, 3)), jnp.float32)
  y = jnp.asarray(0.1 * rng.normal(size=(batch, BFM_SIZES.total)), jnp.float32)

  # The functional NNX idiom: merge/split inside one jax.jit, state buffers donated.
  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, x, y):
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
      return jnp.mean((model(x).to_flat() - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss

  holder = {"state": state}

  def run(n):
    loss = None
    for _ in range(n):
      holder["state"], loss = step(holder["state"], x, y)
    jax.block_until_ready(loss)
    return float(loss)

  params = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
  return run, f"JAX {variant} ({dtype}, {params / 1e6:.1f} M params)"


def torch_runner(batch: int, size: int, threads: int, channels_last: bool):
  import torch

  from torch_peer import ReconResNet50
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = ReconResNet50()
  x = torch.rand(batch, 3, size, size)
  y = 0.1 * torch.randn(batch, 257)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  model.train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)

  def run(n):
    loss = None
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      loss = ((model(x) - y) ** 2).mean()
      loss.backward()
      opt.step()
    return float(loss.detach())

  params = sum(p.numel() for p in model.parameters())
  layout = "channels_last" if channels_last else "NCHW"
  return run, f"PyTorch {torch.__version__} ResNet-50 + heads ({layout}, {params / 1e6:.1f} M params)"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--variants", default="r50,msma_r50", help="comma-separated configs/model.py names")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--steps", type=int, default=3, help="timed steps per round and runner")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--no-torch", action="store_true")
  args = p.parse_args(argv)

  import jax
  runners = []
  for v in args.variants.split(","):
    t0 = time.perf_counter()
    run, name = jax_runner(v.strip(), args.batch, args.size, args.dtype)
    run(1)
    compile_s = time.perf_counter() - t0
    runners.append((name, run, compile_s))
  if not args.no_torch:
    for cl in (False, True):
      t0 = time.perf_counter()
      run, name = torch_runner(args.batch, args.size, args.threads, cl)
      run(1)
      runners.append((name, run, time.perf_counter() - t0))
  for _, run, _ in runners:
    run(args.warmup)

  load_before = os.getloadavg()
  rates = {name: [] for name, _, _ in runners}
  for _ in range(args.rounds):
    for name, run, _ in runners:
      t0 = time.perf_counter()
      run(args.steps)
      rates[name].append(args.batch * args.steps / (time.perf_counter() - t0))
  load_after = os.getloadavg()

  print(f"# encoder training step, batch {args.batch}, {args.size}x{args.size}, {args.dtype}; "
        f"{datetime.date.today()}, {platform.machine()} {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}")
  print(f"# load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; "
        f"{args.rounds} rounds x {args.steps} steps")
  print("| runner | images/s best | images/s median | worst | s/step (best) | first step incl. "
        "compile (s) |")
  print("| --- | ---: | ---: | ---: | ---: | ---: |")
  best, medians = {}, {}
  for name, _, compile_s in runners:
    r = rates[name]
    best[name], medians[name] = max(r), statistics.median(r)
    print(f"| {name} | {best[name]:.2f} | {medians[name]:.2f} | {min(r):.2f} | "
          f"{args.batch / best[name]:.2f} | {compile_s:.1f} |")
  jax_names = [n for n, _, _ in runners if n.startswith("JAX")]
  torch_names = [n for n, _, _ in runners if n.startswith("PyTorch")]
  if jax_names and torch_names:
    top = max(torch_names, key=best.get)
    for n in jax_names:
      print(f"# {n}: {best[n] / best[top]:.2f}x (best) / {medians[n] / medians[top]:.2f}x (median) "
            f"the faster PyTorch layout")
  if len(jax_names) > 1:
    base = jax_names[0]
    for n in jax_names[1:]:
      print(f"# {n}: step time {best[base] / best[n] - 1:+.0%} (best) / "
            f"{medians[base] / medians[n] - 1:+.0%} (median) vs {base}")


if __name__ == "__main__":
  main()
