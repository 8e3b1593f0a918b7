"""Pictures of a reconstruction: overlay on the original photo, depth map, UV texture, turntable views.

Everything is drawn by the project's pure-JAX rasterizer. A face reconstructed in an aligned crop
(crop = scale · photo + translation, `AlignTransform`) is rendered over the crop's region at a
resolution at least that of the photo there (the crop size times 1, 2 or 4: few distinct shapes, so
few compilations), then warped into the photo's own resolution.
"""
from __future__ import annotations

import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.alignment import AlignTransform, warp_affine
from msma_jax import camera as cam
from msma_jax import lighting
from msma_jax.face_model import Coefficients, FaceModel
from msma_jax.render import interpolate, rasterize, render_face

MAX_RENDER_FACTOR = 4      # render the crop region at most 4x the crop size (896 px for 224 crops)


def render_factor(transform: AlignTransform, max_factor: int = MAX_RENDER_FACTOR) -> int:
  """1, 2 or 4: the smallest power of two so that a rendered pixel is no larger than a photo pixel
  (crop scale · factor >= 1), at most `max_factor`."""
  need = 1.0 / max(transform.scale, 1e-6)
  return int(min(max_factor, 2 ** max(0, math.ceil(math.log2(need) - 1e-9))))


def scaled(transform: AlignTransform, factor: float) -> AlignTransform:
  """The same alignment for a crop `factor` times larger (same framing)."""
  s, (tx, ty) = transform.scale, transform.translation
  sy = None if transform.scale_y is None else transform.scale_y * factor
  # Deep3DFaceRecon's integer crop only exists at its own size: other sizes warp bilinearly.
  resample = transform.resample if factor == 1 else "linear"
  return AlignTransform(s * factor, (tx * factor, ty * factor), int(round(transform.size * factor)),
                        scale_y=sy, resample=resample)


class Views:
  """Jitted renderers for one face model (the model is a jit argument, not a constant)."""

  def __init__(self, face_model: FaceModel):
    self.face_model = face_model

    def render_one(fm, coeffs, camera):
      out = render_face(fm, coeffs, camera, with_depth=True)
      return jnp.clip(out.image, 0.0, 1.0), out.mask, out.depth

    self._render = jax.jit(render_one, static_argnums=2)

    def uv_raster(fm, world, camera, size):
      uv = fm.uv
      ones = jnp.ones_like(uv[:, :1])
      # UV square -> clip space (v grows downward like image rows; NDC y = +1 is the top row).
      clip = jnp.concatenate([2.0 * uv[:, :1] - 1.0, 1.0 - 2.0 * uv[:, 1:], 0.0 * ones, ones], -1)
      frags = rasterize(clip[None], fm.triangles, (size, size), cull_backfaces=False)
      attrs = jnp.concatenate([world, cam.project(world, camera),
                               cam.depth(world, camera)[..., None]], -1)
      return frags.triangle_id[0], interpolate(attrs[None], frags, fm.triangles)[0]

    self._uv_raster = jax.jit(uv_raster, static_argnums=(2, 3))

  # ---- crop-space rendering ----------------------------------------------------------------------
  def render_crop(self, coeffs: Coefficients, size: int):
    """One face (unbatched coefficients) rendered in an aligned crop of `size` px.

    Returns (image [S, S, 3] float in [0, 1], mask [S, S] coverage, depth [S, S] model units from
    the camera, 0 on background) as NumPy arrays.
    """
    camera = cam.Camera.for_face_model(self.face_model, int(size))
    batched = jax.tree.map(lambda a: jnp.asarray(a)[None], coeffs)
    image, mask, depth = self._render(self.face_model, batched, camera)
    return np.asarray(image[0]), np.asarray(mask[0]), np.asarray(depth[0])

  def render_views(self, coeffs: Coefficients, yaws_deg=(-50.0, 0.0, 50.0), size: int = 256,
                   background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The reconstructed shape, albedo and lighting seen frontally at the origin turned to each yaw
    (degrees; positive turns the face toward the image's right). -> [N, S, S, 3] float in [0, 1].

    One face per render call: on CPUs the rasterizer loops over a batch anyway, and the program
    compiled for `render_crop` / overlays of the same size is reused.
    """
    bg = np.asarray(background, np.float32)
    out = []
    for yaw in yaws_deg:
      one = coeffs.replace(angle=np.array([0.0, np.radians(yaw), 0.0], np.float32),
                           trans=np.zeros(3, np.float32))
      image, mask, _ = self.render_crop(one, size)
      out.append(image * mask[..., None] + bg * (1.0 - mask[..., None]))
    return np.stack(out)

  # ---- on the original photo ---------------------------------------------------------------------
  def render_on_photo(self, coeffs: Coefficients, transform: AlignTransform,
                      image_size: tuple[int, int], *, with_depth: bool = True):
    """Renders one face at the photo's resolution.

    transform: photo -> crop alignment of the crop the coefficients refer to (any crop size: the
    coefficients do not depend on it); image_size: (H, W) of the photo. Returns (box, image, alpha,
    depth): box (x0, y0, x1, y1) the photo region drawn into (the crop's footprint, clipped to the
    photo; nothing is drawn outside it), image [y1-y0, x1-x0, 3] float in [0, 1] (0 outside the
    face), alpha [y1-y0, x1-x0] coverage in [0, 1], depth [y1-y0, x1-x0] model units from the
    camera, 0 where no face (None unless with_depth).
    """
    factor = render_factor(transform)
    big = scaled(transform, factor)
    image, mask, depth = self.render_crop(coeffs, big.size)
    h, w = image_size
    corners = big.to_image(np.array([[0.0, 0.0], [big.size, big.size]]))
    x0, y0 = (max(0, int(np.floor(v))) for v in corners[0])
    x1, y1 = min(w, int(np.ceil(corners[1, 0]))), min(h, int(np.ceil(corners[1, 1])))
    if x1 <= x0 or y1 <= y0:                                   # the crop lies outside the photo
      x0, y0 = min(x0, w), min(h, y0)
      empty = np.zeros((0, 0), np.float32)
      return (x0, y0, x0, y0), np.zeros((0, 0, 3), np.float32), empty, (
          empty if with_depth else None)
    back = big.inverse_matrix                                  # crop pixels -> photo pixels
    back[:, 2] -= (x0, y0)                                     # ... -> pixels of the box
    size = (y1 - y0, x1 - x0)
    premultiplied = np.concatenate([image * mask[..., None], mask[..., None]], -1)
    # factor is the smallest power of two reaching photo resolution, so this shrinks by < 2x at
    # most: bilinear sampling does not alias.
    warped = warp_affine(premultiplied.astype(np.float32), back, size)
    alpha = np.clip(warped[..., 3], 0.0, 1.0)
    colour = np.where(alpha[..., None] > 1e-6, warped[..., :3] / np.maximum(alpha[..., None], 1e-6),
                      0.0)
    depth_box = (warp_affine(depth.astype(np.float32), back, size,
                             interpolation=cv2.INTER_NEAREST) if with_depth else None)
    return (x0, y0, x1, y1), np.clip(colour, 0.0, 1.0), alpha, depth_box

  def depth_map(self, coeffs: Coefficients, transform: AlignTransform,
                image_size: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] camera depth (model units) of the face at the photo's resolution, 0 elsewhere."""
    (x0, y0, x1, y1), _, _, depth = self.render_on_photo(coeffs, transform, image_size)
    out = np.zeros(image_size, np.float32)
    out[y0:y1, x0:x1] = depth
    return out

  def overlay(self, photo: np.ndarray, coeffs: Coefficients, transform: AlignTransform,
              opacity: float = 1.0) -> np.ndarray:
    """uint8 RGB photo [H, W, 3] with the rendered face composited over it (same size, uint8)."""
    (x0, y0, x1, y1), colour, alpha, _ = self.render_on_photo(coeffs, transform, photo.shape[:2],
                                                              with_depth=False)
    out = photo.copy()
    a = (opacity * alpha)[..., None]
    region = photo[y0:y1, x0:x1].astype(np.float32) / 255.0 * (1.0 - a) + colour * a
    out[y0:y1, x0:x1] = np.round(np.clip(region, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out

  def texture(self, photo: np.ndarray, coeffs: Coefficients, transform: AlignTransform,
              size: int = 512, depth_tolerance: float = 0.005) -> np.ndarray:
    """The photo's colours in the face model's UV layout: uint8 RGBA [size, size, 4].

    Each texel is the photo pixel its surface point projects to; alpha is 0 where the point is not
    seen (outside the UV charts, facing away, or hidden behind another part of the face: its
    camera depth differs from the rendered depth there by more than `depth_tolerance` times the
    camera distance). Raises ValueError for face models without texture coordinates.
    """
    fm = self.face_model
    if fm.uv is None:
      raise ValueError(f"face model {fm.name!r} has no texture coordinates (uv): no UV texture")
    factor = render_factor(transform)
    big = scaled(transform, factor)
    camera = cam.Camera.for_face_model(fm, big.size)
    batched = jax.tree.map(lambda a: jnp.asarray(a)[None], coeffs)
    _, mask, depth = self._render(fm, batched, camera)
    depth = np.asarray(depth[0])
    vertices, _ = fm.decode(batched)
    world = cam.rigid_transform(vertices, batched.angle, batched.trans)[0]
    tri, attrs = self._uv_raster(fm, world, camera, int(size))
    tri, attrs = np.asarray(tri), np.asarray(attrs)
    crop_xy, texel_depth = attrs[..., 3:5], attrs[..., 5]
    # Visibility: the texel's surface point is what the render shows at its pixel.
    ix = np.clip(np.floor(crop_xy[..., 0]).astype(np.int64), 0, big.size - 1)
    iy = np.clip(np.floor(crop_xy[..., 1]).astype(np.int64), 0, big.size - 1)
    inside = ((crop_xy[..., 0] >= 0) & (crop_xy[..., 0] < big.size) & (crop_xy[..., 1] >= 0)
              & (crop_xy[..., 1] < big.size))
    seen = depth[iy, ix]
    visible = (tri >= 0) & inside & (seen > 0) & (
        np.abs(seen - texel_depth) <= depth_tolerance * camera.distance)
    photo_xy = big.to_image(crop_xy.reshape(-1, 2)).reshape(crop_xy.shape).astype(np.float32)
    # cv2.remap samples at integer pixel centres; the project puts centres at +0.5.
    rgb = cv2.remap(photo, photo_xy[..., 0] - 0.5, photo_xy[..., 1] - 0.5, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.where(visible, 255, 0).astype(np.uint8)
    return np.concatenate([np.where(visible[..., None], rgb, 0).astype(np.uint8),
                           alpha[..., None]], -1)


def vertex_colours(face_model: FaceModel, coeffs: Coefficients) -> jax.Array:
  """[..., V, 3] shaded vertex colours (albedo x SH light with posed normals), clipped to [0, 1]."""
  vertices, albedo = face_model.decode(coeffs)
  world = cam.rigid_transform(vertices, coeffs.angle, coeffs.trans)
  normals = face_model.vertex_normals(world)
  return jnp.clip(lighting.shade(albedo, normals, coeffs.gamma), 0.0, 1.0)


def draw_points(image: np.ndarray, points: np.ndarray, colour=(40, 220, 40),
                radius: float | None = None) -> np.ndarray:
  """uint8 RGB image with points [N, 2] (project pixel convention) drawn as filled dots."""
  out = np.ascontiguousarray(image.copy())
  r = radius if radius is not None else max(1.5, 0.004 * max(image.shape[:2]))
  shift = 4
  for x, y in np.asarray(points, np.float64) - 0.5:
    cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), int(round(r * 16)), colour, -1,
               cv2.LINE_AA, shift)
  return out
