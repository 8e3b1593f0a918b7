"""Sharded forward on 8 virtual CPU devices agrees with the single-device forward.

Runs in a subprocess because the device count is fixed when JAX starts
(XLA_FLAGS=--xla_force_host_platform_device_count=8).
"""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib.util, json, sys
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jax.sharding import AxisType, PartitionSpec as P
from msma_jax.face_model import BFM_SIZES
from msma_jax.models import build_model
from msma_jax.models.sharding import data_sharding, param_shardings

spec = importlib.util.spec_from_file_location("cfgs", sys.argv[1])
cfgs = importlib.util.module_from_spec(spec); spec.loader.exec_module(cfgs)
out = {"devices": jax.device_count()}
mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))
x = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 64, 64, 3)), jnp.float32)
fwd = nnx.jit(lambda m, x: m(x).to_flat())

for mode in ("replicated", "fsdp"):
  cfg = cfgs.get_model_config("msma_r18")
  cfg.sharding.params = mode
  # fsdp runs the CPU's matrix-product convolutions (reshapes of the sharded batch), replicated
  # XLA's convolutions: both forms meet sharded inputs.
  cfg.conv_impl = "auto" if mode == "fsdp" else "xla"
  single = build_model(cfg, BFM_SIZES, seed=0)
  key = jax.random.key(1)
  for path, var in nnx.iter_graph(single):          # non-zero heads: outputs depend on the input
    if isinstance(var, nnx.Param) and "out" in path and "heads" in path:
      key, sub = jax.random.split(key)
      var[...] = 0.05 * jax.random.normal(sub, var.shape)
  state = nnx.state(single)
  sharded = build_model(cfg, BFM_SIZES, seed=0, mesh=mesh)
  nnx.update(sharded, jax.device_put(state, param_shardings(sharded, mesh)))
  kernel = sharded.backbone.layer4[0].conv2.kernel[...]
  r = {"kernel_spec": list(kernel.sharding.spec),
       "kernel_shard_shape": list(kernel.addressable_shards[0].data.shape),
       "head_spec": list(sharded.heads.heads["gamma"].out.kernel[...].sharding.spec)}
  xs = jax.device_put(x, data_sharding(mesh))
  for train in (False, True):
    if mode == "replicated" and train:
      continue
    for m in (single, sharded):
      m.train() if train else m.eval()
    ref = np.asarray(fwd(single, x))
    got = fwd(sharded, xs)
    r[f"{'train' if train else 'eval'}_err"] = float(np.abs(np.asarray(got) - ref).max())
    r[f"{'train' if train else 'eval'}_scale"] = float(np.abs(ref).max())
    if train:   # running statistics from the global batch, not per shard
      r["bn_mean_err"] = float(np.abs(np.asarray(sharded.backbone.bn1.mean[...])
                                      - np.asarray(single.backbone.bn1.mean[...])).max())
  # Plain jax.jit on the split model, sharded inputs, agrees too.
  sharded.eval(); single.eval()
  graphdef, st = nnx.split(sharded)
  plain = jax.jit(lambda st, x: nnx.merge(graphdef, st)(x).to_flat())
  r["jax_jit_err"] = float(np.abs(np.asarray(plain(st, xs)) - np.asarray(fwd(single, x))).max())
  out[mode] = r
print("RESULT " + json.dumps(out))
"""


def sharded_results():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "configs" / "model.py")],
                        capture_output=True, text=True, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def test_sharded_forward_agrees_with_single_device_and_follows_the_config():
  # One subprocess for both checks (a module fixture would run once per xdist worker).
  r = sharded_results()
  assert r["devices"] == 8
  for mode in ("replicated", "fsdp"):
    m = r[mode]
    assert m["eval_scale"] > 1e-2
    assert m["eval_err"] <= 1e-5 * max(1.0, m["eval_scale"]), m
    assert m["jax_jit_err"] <= 1e-5 * max(1.0, m["eval_scale"]), m
  # Training mode: batch-norm statistics over the whole (sharded) batch.
  f = r["fsdp"]
  assert f["train_err"] <= 1e-5 * max(1.0, f["train_scale"]), f
  assert f["bn_mean_err"] <= 1e-6, f
  # Parameters replicated or sharded as configured.
  rep, fsdp = r["replicated"], r["fsdp"]
  assert rep["kernel_spec"] == [None, None, None, None]
  assert rep["kernel_shard_shape"] == [3, 3, 512, 512]
  # fsdp: output channels of a ResNet kernel over the 4-way fsdp axis; the 27-output gamma head's
  # dense kernel [256, 27] is sharded on its 256 inputs.
  assert fsdp["kernel_spec"] == [None, None, None, "fsdp"]
  assert fsdp["kernel_shard_shape"] == [3, 3, 512, 128]
  assert fsdp["head_spec"] == ["fsdp", None]
