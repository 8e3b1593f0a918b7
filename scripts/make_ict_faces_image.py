#!/usr/bin/env python
"""Draws docs/images/ict_faces.png: the embedded ICT model's mean face, random identities and
expressions, rendered by msma_jax.render.render_face (SH-shaded, on white).

    python scripts/make_ict_faces_image.py --size 160   # the committed picture (seed 0)

Top row: the mean face and 5 random identities (N(0, 1) identity and albedo coefficients, neutral
expression, turned up to 25 degrees). Bottom row: the mean identity with jawOpen, a smile
(mouthSmile_L + _R), both eyes closed (eyeBlink_L + _R), browInnerUp + jawOpen 0.3, mouthPucker and
a random mixture of the 53 blendshapes (weights uniform in [0, 0.5] on 6 of them).
"""
from __future__ import annotations

import argparse
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import cv2  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from msma_jax import camera as cam  # noqa: E402
from msma_jax.face_model import load_face_model  # noqa: E402
from msma_jax.inference.demo import random_coefficients, to_uint8  # noqa: E402
from msma_jax.render import render_face  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPRESSIONS = ({"jawOpen": 1.0}, {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0},
               {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0}, {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0,
                                                        "jawOpen": 0.3}, {"mouthPucker": 1.0})


def coefficients(fm, seed: int):
  """[12] coefficients: 6 identities (mean first), then 6 expressions of the mean identity."""
  rnd = random_coefficients(fm, jax.random.key(seed), 12, max_yaw_deg=25, max_pitch_deg=8,
                            max_roll_deg=4)
  names = fm.expression_names
  exp = np.zeros((12, fm.sizes.exp), np.float32)
  for row, weights in enumerate(EXPRESSIONS):
    for name, w in weights.items():
      exp[6 + row, names.index(name)] = w
  rng = np.random.default_rng(seed)
  exp[11, rng.choice(fm.sizes.exp, 6, replace=False)] = rng.uniform(0.0, 0.5, 6)
  keep_id = np.r_[np.zeros(1), np.ones(5), np.zeros(6)][:, None].astype(np.float32)
  angle = np.asarray(rnd.angle) * np.r_[0.0, np.ones(5), 0.0, 0.6 * np.ones(5)][:, None]
  return rnd.replace(id=rnd.id * keep_id, tex=rnd.tex * keep_id, exp=jnp.asarray(exp),
                     angle=jnp.asarray(angle, jnp.float32), gamma=rnd.gamma.at[0].set(rnd.gamma[1]))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "images" / "ict_faces.png")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--size", type=int, default=224)
  args = ap.parse_args()
  fm = load_face_model("embedded-ict")
  camera = cam.Camera.for_face_model(fm, args.size)
  out = jax.jit(lambda c: render_face(fm, c, camera, background=jnp.ones(3)))(
      coefficients(fm, args.seed))
  img = np.asarray(out.image)
  grid = np.concatenate([np.concatenate(list(img[:6]), 1), np.concatenate(list(img[6:]), 1)], 0)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  cv2.imwrite(str(args.out), to_uint8(grid))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
