"""Reconstruction speed on this machine, stage by stage: detection, encoder, fitting, export, and
end to end (`msma_jax.Reconstructor`, what `msma-jax reconstruct` runs).

    python benchmarks/bench_reconstruct.py [--repeats 5] [--figure docs/images/reconstruct_photos.png]

Photos: scikit-image's astronaut (512x512) and matplotlib's Grace Hopper (600x512), alternating.
Encoders are untrained (freshly initialised, same architecture and cost as trained ones); all
timings are after compilation (compile times are printed separately), medians of `--repeats` runs.

Rows (ms per image = per face; img/s = images per second at that batch size):
  detection       dlib HOG ("auto": upsample 0, then 1 if nothing found) + 68 landmarks + aligned crop
  encoder         the network alone on 224x224 crops, batch 1 and batched
  fitting         the landmark warm-up (300 steps, no rendering) and one full test-time fitting step
                  (render + gradients) at the fitting crop size
  export          the default files of one face (obj, ply, npz, mat, landmarks, json, overlay PNG)
  end to end      `Reconstructor.reconstruct(photo)` + `FaceResult.save` of the default files, no
                  fitting (encoder prediction), R50; and `reconstruct_many` batched with a fast backbone

`--figure PATH` also writes the README's picture: both photos reconstructed by the CLI's default
fitting-only mode (no checkpoint: landmark warm-up + 100 steps at 224 px), one row per face
(`msma_jax.inference.sheet`), and prints the landmark error against dlib's in % of the
inter-ocular distance.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import numpy as np  # noqa: E402
from timing import time_calls  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def photos() -> list[np.ndarray]:
  import matplotlib
  from skimage import data

  from data_pipelines.images import read_image
  return [np.ascontiguousarray(data.astronaut()),
          read_image(pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")]


def timed(fn, repeats: int) -> float:
  """Median seconds of fn() over `repeats` calls (the callers warm fn up themselves)."""
  return time_calls(fn, repeats, first=False).median

def block(x):
  import jax
  return jax.block_until_ready(x)


class Table:
  def __init__(self):
    self.rows = []

  def add(self, stage, setting, batch, seconds, note="", images=None):
    """seconds: one call processing `images` pictures (default: one batch of `batch`)."""
    images = images or batch
    per_image = seconds / images * 1e3
    self.rows.append((stage, setting, batch, per_image, images / seconds, note))
    print(f"  {stage:12s} {setting:52s} B={batch:<3d} {per_image:8.1f} ms/img "
          f"{images / seconds:7.1f} img/s {note}", flush=True)

  def markdown(self) -> str:
    lines = ["| stage | setting | batch | ms / image | images / s |",
             "| --- | --- | ---: | ---: | ---: |"]
    for stage, setting, b, ms, ips, note in self.rows:
      lines.append(f"| {stage} | {setting}{' (' + note + ')' if note else ''} | {b} | {ms:.1f} | "
                   f"{ips:.1f} |")
    return "\n".join(lines)


def encoder(variant: str):
  from configs.model import get_model_config
  from msma_jax.face_model import load_face_model
  from msma_jax.models import build_model
  model = build_model(get_model_config(variant), load_face_model("embedded"), seed=0)
  model.eval()
  return model


def bench_detection(table, pics, repeats):
  from msma_jax.inference.reconstruct import Reconstructor
  rec = Reconstructor(fit_steps=0, landmark_steps=0)
  for p in pics:                                     # dlib model files loaded, caches warm
    rec.prepare(p)
  t = timed(lambda: [rec.prepare(p) for p in pics], repeats)
  table.add("detection", "dlib HOG auto + 68 landmarks + 224 crop (512x512, 600x512)", 1, t,
            images=len(pics))


def bench_encoders(table, repeats, quick):
  import jax.numpy as jnp
  from flax import nnx
  import jax
  variants = [("msma_r50", (1, 8)), ("deep3d_r50", (1, 8)), ("msma_r18", (1, 16)),
              ("msma_mbv2", (1, 16))]
  if quick:
    variants = [("msma_r50", (1,)), ("msma_mbv2", (16,))]
  for variant, batches in variants:
    model = encoder(variant)
    graphdef, state = nnx.split(model)
    f = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    for b in batches:
      x = jnp.asarray(np.random.default_rng(0).random((b, 224, 224, 3), np.float32))
      t = time.perf_counter()
      block(f(state, x))
      compile_s = time.perf_counter() - t
      s = timed(lambda: block(f(state, x)), repeats)
      table.add("encoder", f"{variant} (untrained) at 224", b, s, f"compile {compile_s:.0f} s")


def bench_fitting(table, pics, repeats, quick):
  import jax.numpy as jnp
  from msma_jax.inference.reconstruct import Reconstructor
  from configs.fit import get_fit_config
  from msma_jax.inference.fit import CoefficientFitter
  from msma_jax import camera as cam
  rec = Reconstructor(fit_steps=0, landmark_steps=0)
  faces = [rec.prepare(p)[0] for p in pics]
  fm = rec.face_model
  sizes = [(224, (1, 4)), (112, (1, 4))] if not quick else [(224, (1,))]
  for size, batches in sizes:
    camera = cam.Camera.for_face_model(fm, size)
    k = size / 224
    import cv2
    for b in batches:
      crops = np.stack([cv2.resize(faces[i % len(faces)].crop, (size, size),
                                   interpolation=cv2.INTER_AREA) for i in range(b)])
      lms = np.stack([faces[i % len(faces)].landmarks * k for i in range(b)]).astype(np.float32)
      from data_pipelines.skin import skin_probability
      batch = {"image": jnp.asarray(crops, jnp.float32) / 255.0,
               "landmarks": jnp.asarray(lms),
               "skin_mask": jnp.asarray(np.stack([skin_probability(c) for c in crops]))}
      cfg = get_fit_config()
      fitter = CoefficientFitter(fm, camera, cfg)
      init = fm.zero_coefficients((b,))
      if size == 224:
        t = time.perf_counter()
        block(fitter.fit(init, batch, steps=0, landmark_steps=300)[0].id)
        c = time.perf_counter() - t
        s = timed(lambda: block(fitter.fit(init, batch, steps=0, landmark_steps=300)[0].id),
                  repeats)
        table.add("fitting", "landmark warm-up, 300 steps (whole warm-up)", b, s,
                  f"compile {c:.0f} s")
      t = time.perf_counter()
      block(fitter.fit(init, batch, steps=1, landmark_steps=0)[0].id)
      c = time.perf_counter() - t
      # fit(steps=n) runs n steps + one evaluation step: difference of two runs = n steps
      n = 5
      s1 = timed(lambda: block(fitter.fit(init, batch, steps=1, landmark_steps=0)[0].id), repeats)
      s2 = timed(lambda: block(fitter.fit(init, batch, steps=1 + n, landmark_steps=0)[0].id),
                 repeats)
      table.add("fitting", f"one full step (render + gradients) at {size}x{size}", b,
                (s2 - s1) / n, f"compile {c:.0f} s")


def bench_export(table, pics, repeats, tmp):
  from msma_jax.inference.reconstruct import Reconstructor
  rec = Reconstructor(fit_steps=0)
  face = rec.reconstruct(pics[0])[0]
  t = time.perf_counter()
  face.save(tmp, "warm", "all", texture_size=512)
  c = time.perf_counter() - t
  for outputs, label in [("obj,ply", "mesh: obj + ply (trimesh)"),
                         ("npz,mat", "coefficients: npz + mat"),
                         ("landmarks,pose", "landmarks txt + pose json"),
                         ("overlay", "overlay: render + composite at 512x512 + PNG"),
                         ("depth", "depth map 16-bit PNG"),
                         ("texture", "UV texture 512x512 RGBA PNG"),
                         ("default", "default outputs (all but depth, texture)")]:
    s = timed(lambda: face.save(tmp, "x", outputs, texture_size=512), repeats)
    table.add("export", label, 1, s, f"compile {c:.0f} s" if outputs == "default" else "")


def bench_end_to_end(table, pics, repeats, tmp, quick):
  from msma_jax.inference.reconstruct import Reconstructor
  rec = Reconstructor(encoder=encoder("msma_r50"), encoder_size=224)
  assert rec.fit_steps == 0 and rec.landmark_steps == 0

  def one(save: bool):
    for i, p in enumerate(pics):
      for f in rec.reconstruct(p):
        if save:
          f.save(tmp, f"e2e{i}")

  t = time.perf_counter()
  one(True)
  c = time.perf_counter() - t
  s = timed(lambda: one(False), repeats)
  table.add("end to end", "msma_r50, no fitting: detect + align + encoder + mesh", 1, s,
            f"first call {c:.0f} s", images=len(pics))
  s = timed(lambda: one(True), repeats)
  table.add("end to end", "msma_r50, no fitting, + default files (overlay incl.)", 1, s,
            images=len(pics))
  n = 16 if quick else 32
  for variant in (["msma_mbv2"] if quick else ["msma_mbv2", "msma_r18"]):
    rec = Reconstructor(encoder=encoder(variant), encoder_size=224, batch_size=16)
    items = [pics[i % len(pics)] for i in range(n)]

    def many(outputs):
      for k, (_, faces) in enumerate(rec.reconstruct_many(items)):
        if outputs:
          for f in faces:
            f.save(tmp, f"b{k}", outputs)

    many("default")                                  # compile
    for outputs, label in [(None, "no files"), ("obj,npz,landmarks,pose", "mesh, coefficients, "
                                                "landmarks, json"), ("default", "default files")]:
      s = timed(lambda: many(outputs), max(1, repeats // 2))
      table.add("end to end", f"{variant}, reconstruct_many of {n} photos, {label}", 16, s,
                images=n)


def write_figure(path: pathlib.Path) -> None:
  from msma_jax.inference.reconstruct import Reconstructor
  from msma_jax.inference.sheet import write_sheet
  rec = Reconstructor()                             # the CLI's default without a checkpoint
  faces = []
  for name, p in zip(("astronaut", "grace_hopper"), photos()):
    t = time.perf_counter()
    (face,) = rec.reconstruct(p, name=name)
    lm, det = face.landmarks, face.input_landmarks
    iod = np.linalg.norm(det[36] - det[45])
    err = np.linalg.norm(lm - det, axis=-1).mean()
    print(f"{name}: fit {rec.landmark_steps} + {rec.fit_steps} steps in "
          f"{time.perf_counter() - t:.1f} s; landmarks {err:.2f} px from dlib's = "
          f"{100 * err / iod:.2f} % of the inter-ocular distance ({iod:.1f} px); pose "
          f"{np.round(face.pose, 1)}")
    faces.append(face)
  print(f"wrote {write_sheet(faces, path, tile=200)}")


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--quick", action="store_true", help="fewer rows (a smoke run)")
  ap.add_argument("--figure", type=pathlib.Path, help="also write the README picture here")
  ap.add_argument("--only", choices=["detection", "encoder", "fitting", "export", "e2e", "none"],
                  help="one group of rows only ('none': just --figure)")
  args = ap.parse_args()
  import jax
  print(f"{platform.machine()} {os.cpu_count()} CPUs, JAX {jax.__version__} "
        f"{jax.default_backend()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  pics = photos()
  table = Table()
  if args.only == "none":
    if args.figure:
      write_figure(args.figure)
    return
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    steps = {"detection": lambda: bench_detection(table, pics, args.repeats),
             "encoder": lambda: bench_encoders(table, args.repeats, args.quick),
             "fitting": lambda: bench_fitting(table, pics, args.repeats, args.quick),
             "export": lambda: bench_export(table, pics, args.repeats, tmp),
             "e2e": lambda: bench_end_to_end(table, pics, args.repeats, tmp, args.quick)}
    for name, fn in steps.items():
      if args.only in (None, name):
        fn()
  print()
  print(table.markdown())
  print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  if args.figure:
    write_figure(args.figure)


if __name__ == "__main__":
  main()
