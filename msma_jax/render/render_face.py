"""`render_face`: coefficients -> shaded image, coverage mask and 2D landmarks.

decode → pose → normals and SH shading → clip space → rasterize → interpolate → composite → antialias.
This is what the losses, training, inference and the synthetic data generator call.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from msma_jax import camera as cam
from msma_jax import lighting
from msma_jax.face_model import Coefficients, FaceModel
from msma_jax.render.antialias import antialias as antialias_fn
from msma_jax.render.antialias import triangle_neighbors
from msma_jax.render.interpolate import interpolate
from msma_jax.render.rasterize import Fragments, RenderForms, rasterize


@struct.dataclass
class RenderOutput:
  """image [B, H, W, 3] linear RGB composited over the background (not clipped);
  mask [B, H, W] coverage in [0, 1] (antialiased: differentiable at silhouettes);
  landmarks_2d [B, 68, 2] pixel coordinates of the model's landmark vertices;
  vertices [B, V, 3] posed (world) vertices in model units; fragments: the rasterizer output;
  depth [B, H, W] camera depth in model units (0 on background) and normals [B, H, W, 3] unit
  world-space normals (0 on background) when requested, else None."""
  image: jax.Array
  mask: jax.Array
  landmarks_2d: jax.Array
  vertices: jax.Array
  fragments: Fragments
  depth: jax.Array | None = None
  normals: jax.Array | None = None


def _background(background, shape, dtype):
  b, h, w = shape
  if background is None:
    return jnp.zeros((b, h, w, 3), dtype)
  bg = jnp.asarray(background, dtype)
  if bg.ndim == 1:                                                    # an RGB colour
    return jnp.broadcast_to(bg, (b, h, w, 3))
  if bg.shape[-3:] != (h, w, 3):
    raise ValueError(f"render_face: background must be an RGB colour or [B, {h}, {w}, 3] image, "
                     f"got {bg.shape}")
  return jnp.broadcast_to(bg, (b, h, w, 3))


def render_face(face_model: FaceModel, coeffs: Coefficients, camera: cam.Camera, *,
                background=None, antialias: bool = True, cull_backfaces: bool = True,
                with_depth: bool = False, with_normals: bool = False,
                forms: RenderForms = RenderForms(), batch_axes=None) -> RenderOutput:
  """Renders a batch of faces.

  face_model: the morphable model; coeffs: `Coefficients` with batch shape [B];
  camera: `Camera` (its image_size (H, W) is the output size); background: None (black), an RGB
  colour [3] or images [B, H, W, 3] in [0, 1]. antialias: silhouette antialiasing (gives the mask
  and image gradients with respect to the silhouette); cull_backfaces: skip triangles facing away.
  with_depth / with_normals: also return camera-depth and normal maps. forms: how the renderer
  batches images, sizes the rasterizer's chunks and stops fusion (`RenderForms`; "auto": the CPU
  forms on the CPU, the accelerator forms on GPU/TPU; `config.render`); batch_axes: mesh axes the
  batch is sharded over, inside a jit under `jax.set_mesh` (see `over_batch`).
  """
  if coeffs.id.ndim != 2:
    raise ValueError(f"render_face: coefficients must have one batch axis [B, n], got "
                     f"{coeffs.id.shape}")
  vertices, albedo = face_model.decode(coeffs)
  world = cam.rigid_transform(vertices, coeffs.angle, coeffs.trans)
  tris = face_model.triangles
  normals = face_model.vertex_normals(world)
  colours = lighting.shade(albedo, normals, coeffs.gamma)
  clip = cam.to_clip(world, camera)
  batch_mode = forms.batch_mode
  frags = rasterize(clip, tris, camera.image_size, cull_backfaces=cull_backfaces,
                    batch_mode=batch_mode, batch_axes=batch_axes,
                    chunk_fragments=forms.chunk_fragments, chunk_sizing=forms.chunk_sizing,
                    min_chunk_fragments=forms.min_chunk_fragments)
  attrs = [colours]
  if with_depth:
    attrs.append(cam.depth(world, camera)[..., None])
  if with_normals:
    attrs.append(normals)
  interp = interpolate(jnp.concatenate(attrs, -1), frags, tris, batch_mode=batch_mode,
                       batch_axes=batch_axes)
  covered = frags.mask[..., None].astype(interp.dtype)
  bg = _background(background, frags.triangle_id.shape, interp.dtype)
  image = interp[..., :3] * covered + bg * (1.0 - covered)
  mask = covered
  if antialias:
    neighbors = face_model.triangle_neighbors
    if neighbors is None:
      neighbors = jnp.asarray(triangle_neighbors(tris))
    aa = antialias_fn(jnp.concatenate([image, mask], -1), frags, clip, tris, neighbors,
                      batch_mode=batch_mode, batch_axes=batch_axes,
                      materialize_mode=forms.materialize)
    image, mask = aa[..., :3], aa[..., 3:]
  extra, k = {}, 3
  if with_depth:
    extra["depth"] = interp[..., k]
    k += 1
  if with_normals:
    n = interp[..., k:k + 3]
    extra["normals"] = n * jax.lax.rsqrt(jnp.sum(n * n, -1, keepdims=True) + 1e-12)
  landmarks = cam.project(face_model.landmarks_3d(world), camera)
  return RenderOutput(image=image, mask=mask[..., 0], landmarks_2d=landmarks, vertices=world,
                      fragments=frags, **extra)
