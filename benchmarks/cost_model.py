"""A cost model of the training step from XLA, and roofline bounds for accelerators.

    python benchmarks/cost_model.py [--batches 2 4] [--devices 8] [--json cost_model.json]
    python benchmarks/cost_model.py --from-json cost_model.json [--at-batch 128]   # tables again

For the default config (configs/default.py: MSMA ResNet-50, 224², embedded face model, Adam) in the
accelerator forms (`model.conv_impl=xla`, `render.batch_mode=vmap`, `render.chunk_sizing=fixed`,
`render.materialize=barrier`: what "auto" picks on a GPU/TPU), in float32 (the config) and with
`model.dtype=bfloat16`, every stage of `step_parts.train_parts` is lowered and compiled on this CPU
(nothing runs) and read out:

  cost_analysis()    "flops" and "bytes accessed" of the compiled program. At two batch sizes
                     b1 < b2, cost(b) = fixed + b * per_image: per_image = (c2 - c1) / (b2 - b1) is
                     the marginal cost of an image, `fixed` what does not grow with the batch (weight
                     reads, the optimizer). A stage at per-device batch B costs per_image + fixed / B
                     per image.
  memory_analysis()  argument + output - aliased + temporary bytes of the full step, per device:
                     linear in the batch too, extrapolated to B = 32 / 64 / 128; with --devices N,
                     also the full step compiled over N virtual CPU devices (a subprocess with
                     XLA_FLAGS=--xla_force_host_platform_device_count=N) at fsdp = 1 and N.

Roofline: a stage's time per image is at least max(FLOPs / peak, bytes / bandwidth); images/s bound
= 1 / that; arithmetic intensity = FLOPs / bytes against the chip's ridge point peak / bandwidth.
Caveats (docs/SCALING.md): XLA's HLO cost analysis counts a while loop's body once, and the
rasterizer's chunk loops have run-time trip counts, so the render is counted for one chunk per
level (exact for the embedded face in the fixed sizing: 6,736 triangles fit one chunk of every
level up to 8 x 8 windows); bytes are the CPU compiler's fusion decisions, not a GPU's.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configs.default import get_config  # noqa: E402
from msma_jax.face_model import load_face_model  # noqa: E402
from step_parts import cost_of, memory_of, train_parts  # noqa: E402

# bf16 dense tensor peak (FLOP/s) and memory bandwidth (bytes/s) per chip.
CHIPS = {"H100 SXM": (989e12, 3.35e12), "H200": (989e12, 4.8e12), "TPU v5e": (197e12, 0.819e12)}
STAGES = ("encoder fwd", "encoder", "render fwd", "render", "render+losses", "full step")
# The stages of a step the roofline compares (their sum bounds the step from below).
STEP_STAGES = ("encoder", "render+losses")
GOAL_TRAIN, GOAL_RENDER = 2500.0, 2000.0    # images/s per chip (issue 21), renders/s at batch 64
ACCELERATOR_FORMS = {"batch_mode": "vmap", "chunk_sizing": "fixed", "materialize": "barrier"}


def accelerator_config(dtype: str, batch: int, fsdp: int = 1):
  """configs/default.py in the GPU/TPU forms, model compute in `dtype`, global batch `batch`."""
  c = get_config()
  c.model.conv_impl = "xla"
  c.model.dtype = dtype
  for k, v in ACCELERATOR_FORMS.items():
    c.render[k] = v
  c.data.global_batch_size = batch
  c.mesh.fsdp = fsdp
  if fsdp > 1:
    c.model.sharding.params = "fsdp"
  return c


def analyse(config, batch: int, stages) -> dict:
  """{stage: {"flops", "bytes", "compile_s"[, memory]}} for a global batch of `batch` images."""
  mesh, parts = train_parts(config, load_face_model(config.face_model), batch)
  out = {}
  with jax.set_mesh(mesh):
    for name in stages:
      t = time.perf_counter()
      compiled = parts[name].compiled()
      out[name] = {**cost_of(compiled), "compile_s": time.perf_counter() - t}
      if name == "full step":
        out[name]["memory"] = memory_of(compiled)
      print(f"  {config.model.dtype} batch {batch} {name}: {out[name]['flops'] / batch / 1e9:.2f}"
            f" GFLOP/image, {out[name]['bytes'] / batch / 1e6:.1f} MB/image "
            f"(compiled in {out[name]['compile_s']:.0f} s)", flush=True)
  return out


def linear_fit(b1: int, c1: float, b2: int, c2: float) -> tuple[float, float]:
  """cost(b) = fixed + b * per_image through two points -> (per_image, fixed)."""
  per_image = (c2 - c1) / (b2 - b1)
  return per_image, c1 - b1 * per_image


def per_image_at(fit: tuple[float, float], batch: int) -> float:
  """Cost per image at per-device batch `batch` from a (per_image, fixed) fit."""
  return fit[0] + fit[1] / batch


def roofline(flops: float, nbytes: float, chip: str) -> dict:
  """Per-image FLOPs and bytes -> images/s bound on `chip`, what bounds it, intensity."""
  peak, bw = CHIPS[chip]
  t_compute, t_memory = flops / peak, nbytes / bw
  return {"images_per_s": 1.0 / max(t_compute, t_memory),
          "bound": "compute" if t_compute >= t_memory else "memory",
          "intensity": flops / nbytes, "ridge": peak / bw}


def memory_over_devices(n: int, per_device_batch: int, dtype: str) -> dict:
  """Full-step memory per device over `n` virtual CPU devices at fsdp = 1 and n (a subprocess)."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
  code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
          f"import cost_model as m; print('RESULT', json.dumps(m.device_memory({per_device_batch}, "
          f"{dtype!r})))")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"{n}-device memory analysis failed:\n{proc.stderr[-3000:]}")
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def device_memory(per_device_batch: int, dtype: str) -> dict:
  """(In the subprocess) {fsdp: memory per device} of the full step on all devices."""
  n = jax.device_count()
  out = {}
  for fsdp in (1, n):
    config = accelerator_config(dtype, per_device_batch * n, fsdp)
    mesh, parts = train_parts(config, load_face_model(config.face_model), per_device_batch * n)
    with jax.set_mesh(mesh):
      out[str(fsdp)] = memory_of(parts["full step"].compiled())
  return out


def stage_table(fits: dict, batch: int) -> list[str]:
  """Markdown rows: per-image GFLOP and MB at per-device batch `batch`, intensity, bounds."""
  lines = [f"| stage | GFLOP / image | MB / image (B={batch}) | fixed MB / step | FLOP / byte | "
           + " | ".join(f"{c} images/s bound" for c in CHIPS) + " |",
           "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in CHIPS) + " |"]
  for name, (f_fit, b_fit) in fits.items():
    flops, nbytes = per_image_at(f_fit, batch), per_image_at(b_fit, batch)
    bounds = [roofline(flops, nbytes, c) for c in CHIPS]
    lines.append(f"| {name} | {flops / 1e9:.2f} | {nbytes / 1e6:.1f} | {b_fit[1] / 1e6:.0f} | "
                 f"{flops / nbytes:.0f} | "
                 + " | ".join(f"{r['images_per_s']:,.0f} ({r['bound']})" for r in bounds) + " |")
  return lines


def step_bound(fits: dict, batch: int, chip: str) -> float:
  """images/s bound of a step from the sum of its stages' per-image times on `chip`."""
  t = 0.0
  for name in STEP_STAGES:
    f_fit, b_fit = fits[name]
    t += 1.0 / roofline(per_image_at(f_fit, batch), per_image_at(b_fit, batch), chip)["images_per_s"]
  return 1.0 / t


def bf16_estimate(fits: dict) -> dict:
  """float32 fits with the encoder's bytes halved: bf16 activations and weights as a GPU/TPU keeps
  them (the CPU compiler converts bf16 convolutions to float32 and so counts more bytes, not fewer).
  The renderer and losses stay float32 (they run in float32 whatever model.dtype is); the full
  step loses half of its encoder's per-image and fixed bytes."""
  out = dict(fits)
  saved = [0.0, 0.0]
  for name in ("encoder fwd", "encoder"):
    if name in fits:
      f_fit, (per, fixed) = fits[name]
      out[name] = (f_fit, (per / 2, fixed / 2))
      if name == "encoder":
        saved = [per / 2, fixed / 2]
  if "full step" in fits:
    f_fit, (per, fixed) = fits["full step"]
    out["full step"] = (f_fit, (per - saved[0], fixed - saved[1]))
  return out


def measure(args) -> dict:
  """Compiles every stage at both batches for every dtype (and the N-device memory)."""
  b1, b2 = sorted(args.batches)
  result = {"batches": [b1, b2], "chips": CHIPS, "date": time.strftime("%Y-%m-%d %H:%M"),
            "jax": jax.__version__, "dtypes": {}}
  for dtype in args.dtypes:
    runs = {b: analyse(accelerator_config(dtype, b), b, args.stages) for b in (b1, b2)}
    fits = {s: (linear_fit(b1, runs[b1][s]["flops"], b2, runs[b2][s]["flops"]),
                linear_fit(b1, runs[b1][s]["bytes"], b2, runs[b2][s]["bytes"]))
            for s in args.stages}
    entry = {"runs": {str(b): r for b, r in runs.items()}, "fits": fits}
    if "full step" in args.stages:
      mem = {b: runs[b]["full step"]["memory"].get("total", float("nan")) for b in (b1, b2)}
      entry["memory_fit"] = linear_fit(b1, mem[b1], b2, mem[b2])
    result["dtypes"][dtype] = entry
  if args.devices:
    dtype = args.dtypes[-1]
    result["devices"] = {"n": args.devices, "per_device_batch": b1, "dtype": dtype,
                         "memory": memory_over_devices(args.devices, b1, dtype)}
  return result


def report(result: dict, at_batch: int) -> None:
  """Prints the tables of a `measure` result (also one read back from its JSON)."""
  b1, b2 = result["batches"]
  tables = {name: {s: tuple(map(tuple, fit)) for s, fit in e["fits"].items()}
            for name, e in result["dtypes"].items()}
  if "float32" in tables:
    tables["bfloat16 on an accelerator (estimate: float32 counts, encoder bytes / 2)"] = (
        bf16_estimate(tables["float32"]))
  for name, fits in tables.items():
    print(f"\n## {name}: per image at per-device batch {at_batch} (fit through batches {b1}, {b2})")
    print("\n".join(stage_table(fits, at_batch)))
    if all(s in fits for s in STEP_STAGES):
      print("step bound (encoder fwd+bwd + render+losses fwd+bwd, serial): " + ", ".join(
          f"{c} {step_bound(fits, at_batch, c):,.0f} images/s" for c in CHIPS))
    for goal, stage, what in ((GOAL_TRAIN, "full step", "msma_r50 training images/s"),
                              (GOAL_RENDER, "render fwd", "renders/s at batch 64")):
      if stage in fits:
        bounds = {c: roofline(per_image_at(fits[stage][0], at_batch),
                              per_image_at(fits[stage][1], at_batch), c)["images_per_s"]
                  for c in CHIPS}
        print(f"goal {goal:,.0f} {what}: " + ", ".join(
            f"{c} bound {v:,.0f} ({'within' if goal <= v else 'OUTSIDE'})"
            for c, v in bounds.items()))
  for name, e in result["dtypes"].items():
    if "memory_fit" in e:
      per, fixed = e["memory_fit"]
      print(f"{name} full-step memory per device (CPU compiler): {fixed / 2**30:.2f} GiB + "
            f"{per / 2**20:.1f} MiB x batch -> " + ", ".join(
                f"B={b}: {(fixed + per * b) / 2**30:.1f} GiB" for b in (32, 64, 128)))
  if "devices" in result:
    d = result["devices"]
    print(f"\n## full step over {d['n']} virtual devices, {d['dtype']}, per-device batch "
          f"{d['per_device_batch']}")
    print("| fsdp | arguments MiB | outputs MiB | aliased MiB | temporaries MiB | total MiB / device |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for fsdp, m in d["memory"].items():
      print(f"| {fsdp} | {m['argument'] / 2**20:.0f} | {m['output'] / 2**20:.0f} | "
            f"{m['alias'] / 2**20:.0f} | {m['temp'] / 2**20:.0f} | {m['total'] / 2**20:.0f} |")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batches", type=int, nargs=2, default=[2, 4], metavar=("B1", "B2"))
  ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
  ap.add_argument("--at-batch", type=int, default=64, help="per-device batch of the tables")
  ap.add_argument("--devices", type=int, default=0, help="also the N-device memory (0: skip)")
  ap.add_argument("--json", type=pathlib.Path, help="write the measurements here")
  ap.add_argument("--from-json", type=pathlib.Path, help="print the tables of an earlier --json")
  args = ap.parse_args(argv)
  if args.from_json:
    report(json.loads(args.from_json.read_text()), args.at_batch)
    return 0
  b1, b2 = sorted(args.batches)
  if b1 < 1 or b1 == b2:
    ap.error(f"--batches needs two different positive sizes, got {args.batches}")
  print(f"# cost_model  jax {jax.__version__}  {jax.default_backend()}  "
        f"{time.strftime('%Y-%m-%d %H:%M')}  cpus {os.cpu_count()}  batches {b1}, {b2}")
  result = measure(args)
  if args.json:
    args.json.write_text(json.dumps(result, indent=1, default=str))
  report(result, args.at_batch)
  return 0


if __name__ == "__main__":
  sys.exit(main())
