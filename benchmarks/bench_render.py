"""Rasterizer benchmark: renders/s forward, photometric loss forward and forward+backward.

Scenes: the embedded face (6,736 triangles; `--face-model embedded-ict`: the ICT head, 31,988) and
the same face subdivided twice (107,776 triangles, denser than BFM's 70,789), posed differently in
each batch element, at 224² and 512², batch 1/8/32.
Peer: the PyPI package `jaxrenderer` (pure-JAX brute-force rasterizer) on the same scenes, run in its
own virtual environment (it pins old jax/numpy), created here on first use.

    python benchmarks/bench_render.py                 # full table (+ peer)
    python benchmarks/bench_render.py --no-peer --sizes 224 --batches 8
    python benchmarks/bench_render.py --no-peer --sizes 224 --batches 8 --subdivisions 0 \
        --face-model embedded-ict
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout, not an install

import jax
import jax.numpy as jnp
import numpy as np
import trimesh

from msma_jax import camera as cam
from msma_jax import lighting
from msma_jax.face_model import load_face_model
from msma_jax.inference.demo import random_coefficients
from msma_jax.render import antialias, interpolate, rasterize, triangle_neighbors
from timing import time_calls

HERE = pathlib.Path(__file__).resolve().parent
PEER_VENV = HERE / ".peer_venv_jaxrenderer"
# jaxrenderer 0.3.2 uses a jax config flag removed after jax 0.4.13.
PEER_REQUIREMENTS = ["jaxrenderer==0.3.2", "jax==0.4.13", "jaxlib==0.4.13", "numpy<2", "scipy<1.12"]


def make_scene(fm, batch, subdivisions, seed=0):
  """Posed world vertices [B, V, 3], vertex colours [B, V, 3], normals, triangles [F, 3]."""
  coeffs = random_coefficients(fm, jax.random.key(seed), batch, max_yaw_deg=40)
  v, a = fm.decode(coeffs)
  world = cam.rigid_transform(v, coeffs.angle, coeffs.trans)
  normals = fm.vertex_normals(world)
  colours = lighting.shade(a, normals, coeffs.gamma)
  world, colours, normals = map(np.asarray, (world, colours, normals))
  tris = np.asarray(fm.triangles)
  if subdivisions == 0:
    return world, colours, normals, tris
  out_v, out_c, out_n = [], [], []
  for i in range(batch):
    verts, faces = world[i], tris
    attrs = {"c": colours[i], "n": normals[i]}
    for _ in range(subdivisions):
      verts, faces, attrs = trimesh.remesh.subdivide(verts, faces, vertex_attributes=attrs,
                                                     return_index=False)
    out_v.append(verts), out_c.append(attrs["c"]), out_n.append(attrs["n"])
  return np.stack(out_v), np.stack(out_c), np.stack(out_n), np.asarray(faces)


def timed(fn, *args, repeats):
  """(first call seconds incl. compilation, median seconds of `repeats` further calls)."""
  t = time_calls(lambda: fn(*args), repeats)
  return t.first, t.median

def build_fns(tris, neighbors, size):
  tris = jnp.asarray(tris)
  neighbors = jnp.asarray(neighbors)

  def render(clip, colours):
    frags = rasterize(clip, tris, size, cull_backfaces=True)
    img = interpolate(colours, frags, tris)
    cov = frags.mask[..., None].astype(img.dtype)
    return antialias(jnp.concatenate([img, cov], -1), frags, clip, tris, neighbors)

  def loss(clip, colours, target):
    out = render(clip, colours)
    img, mask = out[..., :3], out[..., 3:]
    diff = jnp.sqrt(1e-8 + jnp.sum((img - target) ** 2, -1, keepdims=True))
    return jnp.sum(diff * mask) / jnp.maximum(jnp.sum(mask), 1.0)

  return (jax.jit(render), jax.jit(loss),
          jax.jit(jax.value_and_grad(loss, argnums=(0, 1))))


def run_peer(scenes_npz: pathlib.Path, repeats: int) -> dict:
  py = PEER_VENV / "bin" / "python"
  if not py.exists():
    print(f"creating peer environment {PEER_VENV} ({', '.join(PEER_REQUIREMENTS)}) ...",
          file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([str(py), str(HERE / "peers" / "jaxrenderer_peer.py"), str(scenes_npz),
                         "--repeats", str(repeats)], capture_output=True, text=True, env=env)
  if proc.returncode:
    raise RuntimeError(f"jaxrenderer peer failed:\n{proc.stderr[-2000:]}")
  return {r["scene"]: r for r in map(json.loads, proc.stdout.strip().splitlines())}


def projection_matrix(camera):
  """Eye -> clip 4x4 matching msma_jax.camera.to_clip (for the peer)."""
  (h, w), f, (cx, cy), n, fa = camera.image_size, camera.focal, camera.principal, camera.near, camera.far
  return np.array([[2 * f / w, 0, -(2 * cx / w - 1), 0], [0, 2 * f / h, -(1 - 2 * cy / h), 0],
                   [0, 0, -(fa + n) / (fa - n), -2 * fa * n / (fa - n)], [0, 0, -1, 0]], np.float32)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--face-model", default="embedded", help="'embedded', 'embedded-ict' or a file")
  p.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
  p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
  p.add_argument("--subdivisions", type=int, nargs="+", default=[0, 2])
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--no-peer", action="store_true")
  p.add_argument("--peer-repeats", type=int, default=1)
  p.add_argument("--peer-max-triangle-pixels", type=float, default=3e10,
                 help="skip peer scenes whose triangles x pixels exceed this (it is O(F·H·W))")
  p.add_argument("--json", type=pathlib.Path, help="also write the rows here")
  p.add_argument("--min-chunk-fragments", type=int, default=None,
                 help="override rasterize.MIN_CHUNK_FRAGMENTS (CPU chunk sizing; 131072 = the "
                      "fixed chunks used before it)")
  args = p.parse_args()
  if args.min_chunk_fragments is not None:
    if args.min_chunk_fragments < 1:
      p.error(f"--min-chunk-fragments must be positive, got {args.min_chunk_fragments}")
    sys.modules["msma_jax.render.rasterize"].MIN_CHUNK_FRAGMENTS = args.min_chunk_fragments

  fm = load_face_model(args.face_model)
  print(f"# bench_render  jax {jax.__version__}  backend {jax.default_backend()}  "
        f"devices {jax.device_count()}  {platform.processor() or platform.machine()}  "
        f"cpus {os.cpu_count()}  load {os.getloadavg()[0]:.2f}")
  rows, peer_scenes = [], {}
  scenes = {s: make_scene(fm, max(args.batches), s) for s in args.subdivisions}
  for sub in args.subdivisions:
    world, colours, normals, tris = scenes[sub]
    neighbors = triangle_neighbors(tris)
    for size in args.sizes:
      camera = cam.Camera.for_face_model(fm, size)
      render, loss, grad = build_fns(tris, neighbors, (size, size))
      name = f"sub{sub}_{size}"
      eye = np.asarray(cam.to_eye(jnp.asarray(world[0]), camera))
      peer_scenes.update({f"{name}/vertices": eye, f"{name}/colours": colours[0],
                          f"{name}/normals": normals[0], f"{name}/triangles": tris,
                          f"{name}/projection": projection_matrix(camera),
                          f"{name}/size": np.array([size, size])})
      for b in args.batches:
        clip = cam.to_clip(jnp.asarray(world[:b]), camera)
        col = jnp.asarray(colours[:b])
        target = jnp.full((b, size, size, 3), 0.5)
        c_f, t_f = timed(render, clip, col, repeats=args.repeats)
        _, t_l = timed(loss, clip, col, target, repeats=args.repeats)
        c_g, t_g = timed(grad, clip, col, target, repeats=args.repeats)
        row = dict(mesh=f"{fm.name} x{4 ** sub}", sub=sub, triangles=len(tris), size=size, batch=b,
                   render_per_s=b / t_f, loss_fwd_per_s=b / t_l, loss_fwd_bwd_per_s=b / t_g,
                   bwd_over_fwd=t_g / t_l, compile_fwd_s=c_f, compile_grad_s=c_g,
                   covered=float(np.asarray(render(clip, col))[..., 3].mean()))
        rows.append(row)
        print(f"{row['mesh']:17s} F={row['triangles']:6d} {size}² B={b:2d}  "
              f"render {row['render_per_s']:8.1f}/s  loss {row['loss_fwd_per_s']:8.1f}/s  "
              f"loss+grad {row['loss_fwd_bwd_per_s']:8.1f}/s  (x{row['bwd_over_fwd']:.2f})",
              flush=True)

  peer = {}
  if not args.no_peer:
    keep = {k: v for k, v in peer_scenes.items()
            if len(peer_scenes[k.split("/")[0] + "/triangles"]) * int(k.split("_")[1].split("/")[0]) ** 2
            <= args.peer_max_triangle_pixels}
    with tempfile.TemporaryDirectory() as tmp:
      path = pathlib.Path(tmp) / "scenes.npz"
      np.savez(path, **keep)
      peer = run_peer(path, args.peer_repeats)

  print("\n| mesh | triangles | image | batch | render/s | photometric fwd /s | fwd+bwd /s | "
        "fwd+bwd / fwd | jaxrenderer render/s (batch 1) | speed-up |")
  print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for r in rows:
    name = f"sub{r['sub']}_{r['size']}"
    pr = peer.get(name)
    ptxt = f"{1 / pr['seconds_per_render']:.3f}" if pr else "not run"
    sp = f"{r['render_per_s'] * pr['seconds_per_render']:.0f}x" if pr else "–"
    print(f"| {r['mesh']} | {r['triangles']:,} | {r['size']}² | {r['batch']} | "
          f"{r['render_per_s']:.1f} | {r['loss_fwd_per_s']:.1f} | {r['loss_fwd_bwd_per_s']:.1f} | "
          f"{r['bwd_over_fwd']:.2f} | {ptxt} | {sp} |")
  for k, v in peer.items():
    print(f"# peer {k}: {v['seconds_per_render']:.2f} s/render, covered {v['covered_fraction']:.4f}")
  if args.json:
    args.json.write_text(json.dumps({"rows": rows, "peer": peer}, indent=1))


if __name__ == "__main__":
  main()
