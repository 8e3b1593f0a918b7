"""Figures: cumulative error curves (matplotlib) and per-vertex error heat maps on the mean face.

The heat map is drawn by the project's own rasterizer (`msma_jax.render.rasterize` + `interpolate`):
per-vertex errors become colours, Lambert-shaded, rendered frontal and at 40° yaw, then laid out
with a colour bar by matplotlib. Everything is written as PNG.
"""
from __future__ import annotations

import functools
import pathlib
from typing import Optional, Sequence

import numpy as np

from msma_jax.evaluation.metrics import cumulative_error
from msma_jax.evaluation.surface import vertex_normals
from msma_jax.face_model import FaceModel


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")                      # files only; no display on servers
  import matplotlib.pyplot as plt
  return plt


def plot_cumulative_errors(curves: dict[str, Sequence[float]], path, *, xlabel: str,
                           title: str = "", xmax: Optional[float] = None) -> pathlib.Path:
  """One curve per label: the percentage of values <= x. Values with NaN are ignored."""
  plt = _pyplot()
  finite = {k: np.asarray(v, np.float64)[np.isfinite(v)] for k, v in curves.items()}
  top = xmax or max([np.percentile(v, 99) if len(v) else 1.0 for v in finite.values()] + [1e-6]) * 1.05
  x = np.linspace(0.0, top, 400)
  fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
  for label, v in finite.items():
    ax.plot(x, 100.0 * cumulative_error(v, x), label=f"{label} (n={len(v)})")
  ax.set_xlim(0, top)
  ax.set_ylim(0, 100)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("percentage <= x")
  ax.grid(alpha=0.3)
  if title:
    ax.set_title(title)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path)
  plt.close(fig)
  return path


def render_vertex_colors(face_model: FaceModel, colors, *, yaw_deg: float = 0.0,
                         image_size: int = 320) -> np.ndarray:
  """[H, W, 3] picture of the mean face with per-vertex colours [V, 3] in [0, 1], Lambert-shaded,
  on white. Uses the pure-JAX rasterizer (jit-compiled once per image size)."""
  import jax.numpy as jnp

  from msma_jax import camera as cam
  shape = np.asarray(face_model.mean_shape, np.float64)
  angles = np.radians([0.0, yaw_deg, 0.0])
  world = np.asarray(cam.rigid_transform(jnp.asarray(shape, jnp.float32),
                                         jnp.asarray(angles, jnp.float32), jnp.zeros(3, jnp.float32)))
  normals = vertex_normals(world, np.asarray(face_model.triangles))
  light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
  shade = 0.35 + 0.65 * np.clip(normals @ light, 0.0, 1.0)
  camera = cam.Camera.for_face_model(face_model, image_size)
  clip = cam.to_clip(jnp.asarray(world, jnp.float32), camera)[None]
  attributes = np.concatenate([np.asarray(colors) * shade[:, None], np.ones((len(shade), 1))], 1)
  rgb_mask = _raster_fn((image_size, image_size))(clip, jnp.asarray(attributes[None], jnp.float32),
                                                  face_model.triangles)
  rgb_mask = np.asarray(rgb_mask)[0]
  return rgb_mask[..., :3] + (1.0 - rgb_mask[..., 3:])     # white background


@functools.lru_cache(maxsize=None)
def _raster_fn(image_size: tuple[int, int]):
  """jit(rasterize + interpolate, masked) for one image size."""
  import jax

  from msma_jax.render import interpolate, rasterize

  def fn(clip, attributes, triangles):
    frags = rasterize(clip, triangles, image_size, cull_backfaces=True)
    return interpolate(attributes, frags, triangles) * frags.mask[..., None]
  return jax.jit(fn)


def plot_vertex_heatmap(face_model: FaceModel, errors: dict[str, np.ndarray], path, *,
                        title: str = "", vmax: Optional[float] = None, unit: str = "mm",
                        image_size: int = 320) -> pathlib.Path:
  """Per-vertex errors (each [V], NaN = no data, drawn grey) on the mean face, one row per label,
  frontal and 40° views, one shared colour scale (default: 95th percentile of all finite errors)."""
  plt = _pyplot()
  from matplotlib import cm
  from matplotlib import colors as mcolors
  finite = np.concatenate([np.asarray(e)[np.isfinite(e)] for e in errors.values()] + [np.zeros(1)])
  top = vmax or float(np.percentile(finite, 95)) or 1.0
  norm = mcolors.Normalize(0.0, top)
  import matplotlib
  cmap = matplotlib.colormaps["inferno_r"]
  n = len(errors)
  fig, axes = plt.subplots(n, 2, figsize=(6.4, 3.2 * n + 0.4), dpi=110, squeeze=False)
  for row, (label, e) in enumerate(errors.items()):
    e = np.asarray(e, np.float64)
    if e.shape != (face_model.n_vertices,):
      raise ValueError(f"plot_vertex_heatmap: errors for {label!r} must be [{face_model.n_vertices}], "
                       f"got {e.shape}")
    colors = np.where(np.isfinite(e)[:, None], cmap(norm(np.nan_to_num(e)))[:, :3], 0.75)
    for col, yaw in enumerate((0.0, 40.0)):
      ax = axes[row, col]
      picture = render_vertex_colors(face_model, colors, yaw_deg=yaw, image_size=image_size)
      ax.imshow(np.clip(picture, 0, 1))
      ax.set_axis_off()
      if col == 0:
        ax.set_title(label, fontsize=9, loc="left")
  fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), shrink=0.8,
               label=f"error ({unit})")
  if title:
    fig.suptitle(title, fontsize=10)
  path = pathlib.Path(path)
  fig.savefig(path, bbox_inches="tight")
  plt.close(fig)
  return path
