"""The accelerator suite: every figure issue 21 asks of a GPU/TPU, in one command, one table, one JSON.

    python benchmarks/device_suite.py --json suite.json          # <= 8 min on one H100 / H200
    python benchmarks/device_suite.py --tiny --json tiny.json    # the same code paths, CPU, tiny sizes

Rows (each in its own try: a failing row carries its error and the suite goes on; a row that would
start after --budget-s is reported as skipped):
  render       bench_render.py's render (rasterize + interpolate + antialias) of the embedded face
               and of it subdivided twice (107,776 triangles) at 224², batch 64: forward renders/s
               and photometric loss forward + backward renders/s
  train        the train step of `msma_r50` and `r50` (configs/default.py:<variant>) at 224² with
               model.dtype=bfloat16, per-device batch 32 / 64 / 128 (step_parts.train_parts):
               images/s, ms/step, compiled memory per device (memory_analysis) and the device's
               peak bytes in use so far (memory_stats; the rows run in increasing batch), and at
               --share-batch the share of the step in encoder / render / losses (each part timed
               as its own jitted function, as bench_train.py does)
  quickstart   configs/quickstart.py's step at its size and batch (no shares: bench_train.py has them)
  reconstruct  encoder (msma_r50, eval mode, 224²) + one test-time fitting step (CoefficientFitter,
               steps=1: one full step and the evaluation of its result) per batch: faces/s
  pipeline     the Grain training pipeline (read + decode + augment + batch) on a synthetic dataset
               at 224², with 0 workers (also without augmentation) and one worker per host core (at
               most 16): images/s, CPU ms / image over all processes, images/s per core
Times are the best of --repeats calls after a compile call (noise only adds time).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_data  # noqa: E402
import bench_render  # noqa: E402
from configs.fit import get_fit_config  # noqa: E402
from configs.model import get_model_config  # noqa: E402
from msma_jax import camera as cam  # noqa: E402
from msma_jax.face_model import load_face_model  # noqa: E402
from msma_jax.models import build_model  # noqa: E402
from msma_jax.render import triangle_neighbors  # noqa: E402
from step_parts import Part, memory_of, random_batch, train_parts  # noqa: E402
from timing import time_calls  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What the suite runs: image side (px), batches, variants and how often."""
  image: int = 224
  render_batch: int = 64
  subdivisions: tuple = (0, 2)              # embedded face, x16 triangles
  variants: tuple = ("msma_r50", "r50")
  train_batches: tuple = (32, 64, 128)      # per device
  share_batch: int = 64
  dtype: str = "bfloat16"
  backbone_width: float = 1.0
  fusion_width: int = 256
  quickstart_size: int = 0                  # 0: the config's
  quickstart_batch: int = 0
  recon_batch: int = 64
  pipeline_records: int = 512
  pipeline_batches: int = 20
  pipeline_batch: int = 32
  repeats: int = 5


# --tiny: the same code paths on a CPU in a few minutes, nearly all of it compilation: one variant
# at one batch (a quarter-width MSMA ResNet-18 stands in for the R50 variants, whose train step
# alone takes 2 minutes to compile on a 2-core CPU).
TINY = Sizes(image=32, render_batch=2, subdivisions=(0, 1), variants=("msma_r18",),
             train_batches=(2,), share_batch=2, backbone_width=0.25, fusion_width=16,
             quickstart_size=32, quickstart_batch=2, recon_batch=2, pipeline_records=16,
             pipeline_batches=2, pipeline_batch=4, repeats=1)


def best(fn, repeats: int) -> tuple[float, float]:
  """(first call seconds incl. compilation, best of `repeats` further calls)."""
  t = time_calls(fn, repeats)
  return t.first, t.best


def peak_bytes() -> int | None:
  """The first local device's peak bytes in use so far (None where the backend keeps no stats)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def render_rows(sizes: Sizes):
  """(name, fn) per mesh: rasterizer forward and loss forward + backward renders/s."""
  fm = load_face_model("embedded")
  camera = cam.Camera.for_face_model(fm, sizes.image)
  b, size = sizes.render_batch, sizes.image

  def row(sub):
    world, colours, _, tris = bench_render.make_scene(fm, b, sub)
    render, _, grad = bench_render.build_fns(tris, triangle_neighbors(tris), (size, size))
    clip = cam.to_clip(jnp.asarray(world), camera)
    col = jnp.asarray(colours)
    target = jnp.full((b, size, size, 3), 0.5)
    c_f, t_f = best(lambda: render(clip, col), sizes.repeats)
    c_g, t_g = best(lambda: grad(clip, col, target), sizes.repeats)
    return {"setting": f"{len(tris):,} triangles, {size}², batch {b}", "triangles": len(tris),
            "renders_per_s": b / t_f, "fwd_bwd_renders_per_s": b / t_g, "ms_per_batch": 1e3 * t_f,
            "compile_s": c_f + c_g}

  return [(f"render x{4 ** sub}", lambda sub=sub: row(sub)) for sub in sizes.subdivisions]


def _train_config(spec: str, sizes: Sizes, per_device_batch: int, quickstart: bool = False):
  path, _, variant = spec.partition(":")
  module = __import__(f"configs.{path}", fromlist=["get_config"])
  c = module.get_config(variant) if variant else module.get_config()
  if quickstart:
    c.image_size = sizes.quickstart_size or c.image_size
    per_device_batch = sizes.quickstart_batch or c.data.global_batch_size
  else:
    c.image_size = sizes.image
    c.model.dtype = sizes.dtype
    c.model.backbone_width = sizes.backbone_width
    c.model.fusion.width = sizes.fusion_width
  c.data.global_batch_size = per_device_batch * jax.device_count()
  return c


def train_row(config, shares: bool, repeats: int) -> dict:
  """images/s, ms/step, memory and (if `shares`) the parts' shares of one config's train step."""
  b = int(config.data.global_batch_size)
  mesh, parts = train_parts(config, load_face_model(config.face_model), b)
  with jax.set_mesh(mesh):
    t = time.perf_counter()
    compiled = parts["full step"].compiled()
    compile_s = time.perf_counter() - t
    step = Part(compiled, parts["full step"].args, donates=True)
    _, full_s = best(step, repeats)
    out = {"setting": f"{config.model.variant} {config.image_size}² {config.model.dtype}, "
                      f"batch {b // jax.device_count()} per device",
           "images_per_s": b / full_s, "images_per_s_per_device": b / full_s / jax.device_count(),
           "ms_per_step": 1e3 * full_s, "compile_s": compile_s,
           "memory_analysis_bytes": memory_of(compiled).get("total"), "peak_bytes": peak_bytes()}
    if shares:
      times = {name: best(parts[name], repeats)[1] for name in ("encoder", "render+losses", "render")}
      out["share"] = {"encoder": times["encoder"] / full_s, "render": times["render"] / full_s,
                      "losses": (times["render+losses"] - times["render"]) / full_s}
  return out


def train_rows(sizes: Sizes):
  rows = []
  for variant in sizes.variants:
    for b in sizes.train_batches:
      rows.append((f"train {variant}", lambda v=variant, b=b: train_row(
          _train_config(f"default:{v}", sizes, b), b == sizes.share_batch, sizes.repeats)))
  rows.append(("quickstart step", lambda: train_row(
      _train_config("quickstart", sizes, 0, quickstart=True), False, sizes.repeats)))
  return rows


def reconstruct_row(sizes: Sizes) -> dict:
  """Faces/s of the encoder (eval mode) + one fitting step at the suite's image size."""
  from flax import nnx
  from msma_jax.inference.fit import CoefficientFitter
  fm = load_face_model("embedded")
  mc = get_model_config(sizes.variants[0])
  mc.backbone_width, mc.fusion.width = sizes.backbone_width, sizes.fusion_width
  model = build_model(mc, fm, seed=0)
  model.eval()
  graphdef, state = nnx.split(model)
  encode = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  b, size = sizes.recon_batch, sizes.image
  batch = {k: jnp.asarray(v) for k, v in random_batch(b, size).items() if k != "valid"}
  fitter = CoefficientFitter(fm, cam.Camera.for_face_model(fm, size), get_fit_config())

  def run():
    coeffs = encode(state, batch["image"])
    return fitter.fit(coeffs, batch, steps=1, landmark_steps=0)[0].id

  first, t = best(run, sizes.repeats)
  return {"setting": f"{sizes.variants[0]} + 1 fit step, {size}², batch {b}",
          "faces_per_s": b / t, "ms_per_batch": 1e3 * t, "compile_s": first}


def pipeline_rows(sizes: Sizes, tmp: pathlib.Path):
  """Rows timing the Grain pipeline over a synthetic dataset built on first use (in `tmp`)."""
  from msma_jax.train.data import ensure_dataset
  import ml_collections
  cache = {}

  def dataset():
    if "path" not in cache:
      section = ml_collections.ConfigDict({
          "path": str(tmp / "pipeline"), "synthetic_if_missing": True,
          "synthetic": {"num_examples": sizes.pipeline_records, "seed": 0}})
      cache["path"] = ensure_dataset(section, "embedded", sizes.image)
    return cache["path"]

  def row(workers, augment=True):
    rate, cpu_ms = bench_data.bench_pipeline(
        dataset(), workers, sizes.pipeline_batches, warmup=2, batch_size=sizes.pipeline_batch,
        size=sizes.image, augment=augment)
    return {"setting": f"{sizes.image}² synthetic, batch {sizes.pipeline_batch}, "
                       f"{workers} workers ({os.cpu_count()} host cores)"
                       + ("" if augment else ", no augmentation"),
            "images_per_s": rate, "cpu_ms_per_image": cpu_ms,
            "images_per_s_per_core": 1e3 / cpu_ms}

  cores = os.cpu_count() or 1
  # Decode-only is what the host would still do with the augmentation on the device.
  return [("pipeline", lambda: row(0)), ("pipeline decode only", lambda: row(0, augment=False)),
          ("pipeline", lambda: row(min(cores, 16)))]


def run_rows(named_fns, deadline: float) -> list[dict]:
  """Runs each (name, fn) -> row dict; an exception or the deadline becomes the row's error."""
  rows = []
  for name, fn in named_fns:
    row = {"name": name, "error": None}
    if time.monotonic() > deadline:
      row["error"] = "skipped: time budget spent"
    else:
      t = time.perf_counter()
      try:
        row.update(fn())
      except Exception as e:       # one failing row must not cost the others (the suite is one go)
        traceback.print_exc(file=sys.stderr)
        row["error"] = f"{type(e).__name__}: {e}"[:500]
      row["wall_s"] = time.perf_counter() - t
    print(f"# {format_row(row)}", flush=True)
    rows.append(row)
  return rows


def _fmt(v, spec=",.1f"):
  return "–" if v is None else format(v, spec)


def format_row(r: dict) -> str:
  """One Markdown table row: name | setting | rate | ms | memory | shares | compile | error."""
  rate = next((f"{r[k]:,.1f} {unit}" for k, unit in (
      ("renders_per_s", "renders/s"), ("images_per_s", "images/s"), ("faces_per_s", "faces/s"))
      if r.get(k) is not None), "–")
  if r.get("fwd_bwd_renders_per_s") is not None:
    rate += f"; fwd+bwd {r['fwd_bwd_renders_per_s']:,.1f}/s"
  if r.get("cpu_ms_per_image") is not None:
    rate += f"; {r['cpu_ms_per_image']:.2f} CPU ms/image"
  ms = _fmt(r.get("ms_per_step", r.get("ms_per_batch")))
  mem = "–"
  if r.get("memory_analysis_bytes") is not None:
    mem = f"{r['memory_analysis_bytes'] / 2**20:,.0f}"
    if r.get("peak_bytes") is not None:
      mem += f" (peak {r['peak_bytes'] / 2**20:,.0f})"
  share = " / ".join(f"{100 * v:.0f} %" for v in r["share"].values()) if r.get("share") else "–"
  return (f"| {r['name']} | {r.get('setting', '')} | {rate} | {ms} | {mem} | {share} | "
          f"{_fmt(r.get('compile_s'))} | {r['error'] or ''} |")


TABLE_HEAD = ("| row | setting | rate | ms / step or batch | MiB per device (compiled; peak) | "
              "encoder / render / losses | compile s | error |\n"
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")


def meta(tiny: bool) -> dict:
  d = jax.devices()[0]
  return {"jax": jax.__version__, "backend": jax.default_backend(), "device": d.device_kind,
          "devices": jax.device_count(), "host": platform.machine(), "host_cores": os.cpu_count(),
          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "tiny": tiny}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--tiny", action="store_true", help="tiny sizes: a CPU smoke run in seconds")
  ap.add_argument("--json", type=pathlib.Path, default=pathlib.Path("device_suite.json"))
  ap.add_argument("--budget-s", type=float, default=450.0,
                  help="rows that would start later are skipped (default: 7.5 min)")
  ap.add_argument("--only", nargs="+", choices=("render", "train", "reconstruct", "pipeline"))
  args = ap.parse_args(argv)
  sizes = TINY if args.tiny else Sizes()
  deadline = time.monotonic() + args.budget_s
  info = meta(args.tiny)
  print(f"# device_suite  {json.dumps(info)}", flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    groups = {"render": lambda: render_rows(sizes), "train": lambda: train_rows(sizes),
              "reconstruct": lambda: [("reconstruct", lambda: reconstruct_row(sizes))],
              "pipeline": lambda: pipeline_rows(sizes, pathlib.Path(tmp))}
    named = [r for g, make in groups.items() if not args.only or g in args.only for r in make()]
    rows = run_rows(named, deadline)
  print("\n" + TABLE_HEAD)
  print("\n".join(format_row(r) for r in rows))
  args.json.write_text(json.dumps({"meta": info, "sizes": dataclasses.asdict(sizes), "rows": rows},
                                  indent=1))
  print(f"\nwrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
