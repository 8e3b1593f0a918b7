"""The demo job: decode, light, project and draw the mean face and random faces; export meshes."""
from __future__ import annotations

import json
import pathlib

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from msma_jax import camera as cam
from msma_jax import lighting
from msma_jax.face_model import Coefficients, FaceModel, load_face_model
from msma_jax.inference.export import save_coefficients, save_mesh


def random_coefficients(face_model: FaceModel, key: jax.Array, batch: int, *,
                        max_yaw_deg: float = 35.0, max_pitch_deg: float = 15.0,
                        max_roll_deg: float = 10.0) -> Coefficients:
  """Plausible random faces: N(0,1) identity/albedo, one expression at a random strength, pose in the
  given ranges, a random directional SH light."""
  s = face_model.sizes
  k = jax.random.split(key, 6)
  exp_strength = jax.random.uniform(k[1], (batch, 1), minval=0.0, maxval=0.8)
  exp_pick = jax.nn.one_hot(jax.random.randint(k[1], (batch,), 0, max(s.exp, 1)), s.exp)
  limits = jnp.radians(jnp.array([max_pitch_deg, max_yaw_deg, max_roll_deg]))
  angle = jax.random.uniform(k[3], (batch, 3), minval=-1.0, maxval=1.0) * limits
  gamma = jnp.zeros((batch, 3, 9))
  light = jax.random.normal(k[4], (batch, 1, 3)) * jnp.array([0.15, 0.15, 0.1])
  gamma = gamma.at[:, :, 1:4].set(jnp.broadcast_to(light, (batch, 3, 3)))
  gamma = gamma.at[:, :, 0].add(jax.random.uniform(k[5], (batch, 1), minval=-0.1, maxval=0.2))
  return Coefficients(
      id=jax.random.normal(k[0], (batch, s.id)),
      exp=exp_pick * exp_strength,
      tex=0.8 * jax.random.normal(k[2], (batch, s.tex)),
      angle=angle, gamma=gamma.reshape(batch, 27), trans=jnp.zeros((batch, 3)))


def draw_painter(pixels: np.ndarray, depth: np.ndarray, colors: np.ndarray, triangles: np.ndarray,
                 image_size: int, background=(1.0, 1.0, 1.0)) -> np.ndarray:
  """Preview drawing (painter's algorithm, far triangles first); float RGB [H, W, 3] in [0, 1]."""
  img = np.empty((image_size, image_size, 3), np.float32)
  img[:] = background
  tri_depth = depth[triangles].mean(axis=1)
  pts = pixels - 0.5  # pixel centres are at +0.5; OpenCV puts them at integers
  for t in np.argsort(-tri_depth):
    tri = triangles[t]
    p = np.round(pts[tri] * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    color = np.clip(colors[tri].mean(axis=0), 0, 1)
    cv2.fillConvexPoly(img, p, color.tolist(), lineType=cv2.LINE_AA, shift=4)
  return img


def draw_landmarks(img: np.ndarray, landmarks: np.ndarray, color=(0.1, 0.8, 0.1)) -> np.ndarray:
  out = img.copy()
  for x, y in landmarks - 0.5:
    cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), 2 * 16, color, -1, cv2.LINE_AA, 4)
  return out


def run_demo(out_dir: str | pathlib.Path, face_model: str = "embedded", num_random: int = 5,
             seed: int = 0, image_size: int = 224) -> dict:
  """Writes PNG renders, OBJ/PLY meshes and coefficient files of the mean face and random faces."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  fm = load_face_model(face_model)
  camera = cam.Camera.for_face_model(fm, image_size)
  coeffs = random_coefficients(fm, jax.random.key(seed), num_random)
  mean = fm.zero_coefficients((1,))
  coeffs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), mean, coeffs)

  @jax.jit
  def forward(c):
    vertices, albedo = fm.decode(c)
    world = cam.rigid_transform(vertices, c.angle, c.trans)
    normals = lighting.vertex_normals(world, fm.triangles)
    colors = lighting.shade(albedo, normals, c.gamma)
    return world, colors, cam.project(world, camera), cam.depth(world, camera)

  world, colors, pixels, depth = map(np.asarray, forward(coeffs))
  triangles = np.asarray(fm.triangles)
  lm_idx = np.asarray(fm.landmark_indices)
  tiles, written = [], []
  for i in range(coeffs.id.shape[0]):
    name = "mean_face" if i == 0 else f"random_{i:02d}"
    img = draw_painter(pixels[i], depth[i], colors[i], triangles, image_size)
    tiles.append(draw_landmarks(img, pixels[i][lm_idx]))
    cv2.imwrite(str(out / f"{name}.png"), cv2.cvtColor((img * 255).round().astype(np.uint8),
                                                       cv2.COLOR_RGB2BGR))
    save_mesh(out / f"{name}.obj", world[i], triangles, colors[i])
    save_mesh(out / f"{name}.ply", world[i], triangles, colors[i])
    one = jax.tree.map(lambda a: a[i], coeffs)
    save_coefficients(out / f"{name}.npz", one, lm68=pixels[i][lm_idx])
    save_coefficients(out / f"{name}.mat", one, lm68=pixels[i][lm_idx])
    written.append(name)
  sheet = np.concatenate(tiles, axis=1)
  cv2.imwrite(str(out / "faces.png"), cv2.cvtColor((sheet * 255).round().astype(np.uint8),
                                                  cv2.COLOR_RGB2BGR))
  summary = {"face_model": fm.name, "faces": written, "image_size": image_size, "seed": seed,
             "out_dir": str(out)}
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary
