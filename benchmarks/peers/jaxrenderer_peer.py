"""Peer renderer for bench_render.py: renders the same scenes with the PyPI package `jaxrenderer`.

Runs inside its own virtual environment (jaxrenderer pins jax < 0.5 and numpy < 2); bench_render.py
creates it and calls this script with an .npz of scenes. Prints one JSON line per scene.
Scenes use jaxrenderer's Gouraud shader on the world-space vertices, vertex colours and normals of
our scene, with the same projection matrix, so coverage and colours correspond to msma-jax's render.
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import renderer.pipeline as pipeline
from renderer import LightSource, Renderer
from renderer.geometry import Camera
from renderer.shaders.gouraud import GouraudExtraInput, GouraudShader


def main():
  p = argparse.ArgumentParser()
  p.add_argument("scenes")
  p.add_argument("--repeats", type=int, default=1)
  args = p.parse_args()
  z = np.load(args.scenes)
  for name in [k[:-len("/vertices")] for k in z.files if k.endswith("/vertices")]:
    verts = jnp.asarray(z[f"{name}/vertices"], jnp.float32)     # [V, 3] eye space
    cols = jnp.asarray(z[f"{name}/colours"], jnp.float32)
    nrm = jnp.asarray(z[f"{name}/normals"], jnp.float32)
    tris = jnp.asarray(z[f"{name}/triangles"], jnp.int32)
    proj = jnp.asarray(z[f"{name}/projection"], jnp.float32)    # eye -> clip, 4x4
    h, w = (int(v) for v in z[f"{name}/size"])
    camera = Camera.create(
        view=jnp.eye(4, dtype=jnp.float32), projection=proj,
        viewport=Camera.viewport_matrix(lowerbound=jnp.zeros(2, int),
                                         dimension=jnp.array([w, h]), depth=jnp.array(1.0)))
    light = LightSource(direction=jnp.array([0.0, 0.0, 1.0]), colour=jnp.ones(3))
    extra = GouraudExtraInput(position=verts, colour=cols, normal=nrm, light=light)

    def run():
      buffers = Renderer.create_buffers(width=w, height=h, batch=None)
      out = pipeline.render(camera, GouraudShader, buffers, tris, extra)
      return jax.block_until_ready(out)

    t0 = time.perf_counter()
    out = run()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      out = run()
      times.append(time.perf_counter() - t0)
    canvas = np.asarray(out.targets[0])
    covered = float((np.asarray(out.zbuffer) < 1).mean())
    print(json.dumps({"scene": name, "seconds_per_render": float(np.median(times)),
                      "first_call_s": compile_s, "covered_fraction": covered,
                      "canvas_mean": float(canvas.mean())}), flush=True)


if __name__ == "__main__":
  main()
