"""The demo job: render the mean face and random faces with the JAX rasterizer; export meshes."""
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
from msma_jax.render import render_face


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


def draw_landmarks(img: np.ndarray, landmarks: np.ndarray, color=(0.1, 0.8, 0.1)) -> np.ndarray:
  out = img.copy()
  for x, y in landmarks - 0.5:
    cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), 2 * 16, color, -1, cv2.LINE_AA, 4)
  return out


def to_uint8(img: np.ndarray) -> np.ndarray:
  """Float RGB in [0, 1] -> uint8 BGR for OpenCV."""
  rgb = (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)
  return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def run_demo(out_dir: str | pathlib.Path, face_model: str = "embedded", num_random: int = 5,
             seed: int = 0, image_size: int = 224) -> dict:
  """Renders (pure-JAX rasterizer) and exports the mean face and random faces.

  Writes per face: `<name>.png` (SH-shaded render on white), `<name>_mask.png`, OBJ/PLY meshes and
  coefficient files (.npz, .mat with lm68 landmarks); and `faces.png`: one column per face with the
  render, its coverage mask and its 68 projected landmarks.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  fm = load_face_model(face_model)
  camera = cam.Camera.for_face_model(fm, image_size)
  coeffs = random_coefficients(fm, jax.random.key(seed), num_random)
  mean = fm.zero_coefficients((1,))
  coeffs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), mean, coeffs)
  result = jax.jit(lambda c: render_face(fm, c, camera, background=jnp.ones(3)))(coeffs)
  images, masks = np.asarray(result.image), np.asarray(result.mask)
  landmarks, world = np.asarray(result.landmarks_2d), np.asarray(result.vertices)
  colours = np.asarray(jax.jit(lambda c: _vertex_colours(fm, c))(coeffs))
  triangles = np.asarray(fm.triangles)
  columns, written = [], []
  for i in range(images.shape[0]):
    name = "mean_face" if i == 0 else f"random_{i:02d}"
    cv2.imwrite(str(out / f"{name}.png"), to_uint8(images[i]))
    cv2.imwrite(str(out / f"{name}_mask.png"), to_uint8(np.repeat(masks[i][..., None], 3, -1)))
    save_mesh(out / f"{name}.obj", world[i], triangles, colours[i])
    save_mesh(out / f"{name}.ply", world[i], triangles, colours[i])
    one = jax.tree.map(lambda a: a[i], coeffs)
    save_coefficients(out / f"{name}.npz", one, lm68=landmarks[i])
    save_coefficients(out / f"{name}.mat", one, lm68=landmarks[i])
    mask_rgb = np.repeat(masks[i][..., None], 3, -1)
    lm_img = draw_landmarks(np.clip(images[i], 0, 1) * 0.6 + 0.4, landmarks[i])
    columns.append(np.concatenate([images[i], mask_rgb, lm_img], axis=0))
    written.append(name)
  cv2.imwrite(str(out / "faces.png"), to_uint8(np.concatenate(columns, axis=1)))
  summary = {"face_model": fm.name, "faces": written, "image_size": image_size, "seed": seed,
             "out_dir": str(out)}
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


def _vertex_colours(fm: FaceModel, coeffs: Coefficients) -> jax.Array:
  """[B, V, 3] SH-shaded vertex colours (for coloured mesh exports)."""
  vertices, albedo = fm.decode(coeffs)
  world = cam.rigid_transform(vertices, coeffs.angle, coeffs.trans)
  return lighting.shade(albedo, fm.vertex_normals(world), coeffs.gamma)
