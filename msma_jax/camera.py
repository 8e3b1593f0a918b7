"""Rigid pose and camera projection.

Conventions (DESIGN.md): model space is right-handed, y up, the face looks toward +z; the camera sits
on +z at `distance` and looks toward -z. Image pixels: x right, y down, pixel (x, y) has its centre at
(x + 0.5, y + 0.5), so the principal point 112 is the centre of a 224-pixel image.

Clip space is OpenGL's (before the perspective divide; NDC y = +1 is the top image row), which is what
`msma_jax.render.rasterize` consumes.
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct

from msma_jax.face_model.model import FaceModel


def euler_to_rotation(angles: jax.Array) -> jax.Array:
  """[..., 3] radians (x, y, z) -> [..., 3, 3] rotation R = Rz(z) · Ry(y) · Rx(x)."""
  x, y, z = angles[..., 0], angles[..., 1], angles[..., 2]
  cx, sx, cy, sy, cz, sz = jnp.cos(x), jnp.sin(x), jnp.cos(y), jnp.sin(y), jnp.cos(z), jnp.sin(z)
  one, zero = jnp.ones_like(x), jnp.zeros_like(x)
  rx = jnp.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1)
  ry = jnp.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1)
  rz = jnp.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1)
  shape = (*angles.shape[:-1], 3, 3)
  return rz.reshape(shape) @ ry.reshape(shape) @ rx.reshape(shape)


def rotation_to_euler(rotation: jax.Array) -> jax.Array:
  """Inverse of `euler_to_rotation` ([..., 3, 3] -> [..., 3] radians, y in [-pi/2, pi/2])."""
  r = rotation
  y = jnp.arcsin(jnp.clip(-r[..., 2, 0], -1.0, 1.0))
  x = jnp.arctan2(r[..., 2, 1], r[..., 2, 2])
  z = jnp.arctan2(r[..., 1, 0], r[..., 0, 0])
  return jnp.stack([x, y, z], -1)


def rigid_transform(points: jax.Array, angles: jax.Array, trans: jax.Array) -> jax.Array:
  """[..., N, 3] model space -> world: points @ R.T + trans (angles [..., 3], trans [..., 3])."""
  rotation = euler_to_rotation(angles)
  return jnp.einsum("...nc,...dc->...nd", points, rotation) + trans[..., None, :]


def rotate_vectors(vectors: jax.Array, angles: jax.Array) -> jax.Array:
  """[..., N, 3] directions (normals) rotated like `rigid_transform`, without translation."""
  return jnp.einsum("...nc,...dc->...nd", vectors, euler_to_rotation(angles))


@struct.dataclass
class Camera:
  """Pinhole (or weak-perspective) camera; all fields static so a Camera can be a jit constant.

  focal, principal: pixels for an image of `image_size` (H, W). distance, near, far: model units.
  Weak perspective uses the scale focal / distance (pixels per model unit), which matches perspective
  for points at the origin's depth.
  """
  focal: float = struct.field(pytree_node=False)
  principal: tuple[float, float] = struct.field(pytree_node=False)  # (cx, cy) pixels
  distance: float = struct.field(pytree_node=False)
  image_size: tuple[int, int] = struct.field(pytree_node=False)     # (H, W)
  near: float = struct.field(pytree_node=False)
  far: float = struct.field(pytree_node=False)
  projection: Literal["perspective", "weak_perspective"] = struct.field(
      pytree_node=False, default="perspective")

  @classmethod
  def for_face_model(cls, face_model: FaceModel, image_size: int | tuple[int, int] = 224, *,
                     projection: Literal["perspective", "weak_perspective"] = "perspective",
                     focal: float | None = None, distance: float | None = None) -> "Camera":
    """The model's default camera scaled to `image_size` (the face fills the crop the same way)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    d = face_model.camera
    s = min(h, w) / d.image_size
    return cls(focal=float(focal if focal is not None else d.focal * s),
               principal=(w / 2.0, h / 2.0),
               distance=float(distance if distance is not None else d.distance),
               image_size=(int(h), int(w)), near=float(d.near), far=float(d.far),
               projection=projection)

  @property
  def weak_scale(self) -> float:
    return self.focal / self.distance


def to_eye(points: jax.Array, camera: Camera) -> jax.Array:
  """[..., 3] world -> eye coordinates (camera at the origin looking toward -z): z - distance."""
  return points - jnp.array([0.0, 0.0, camera.distance], points.dtype)


def project(points: jax.Array, camera: Camera) -> jax.Array:
  """[..., 3] world (after the rigid transform) -> [..., 2] pixel coordinates (x right, y down)."""
  cx, cy = camera.principal
  if camera.projection == "weak_perspective":
    s = camera.weak_scale
    return jnp.stack([cx + s * points[..., 0], cy - s * points[..., 1]], -1)
  depth = camera.distance - points[..., 2]
  return jnp.stack([cx + camera.focal * points[..., 0] / depth,
                    cy - camera.focal * points[..., 1] / depth], -1)


def depth(points: jax.Array, camera: Camera) -> jax.Array:
  """[..., 3] world -> [...] distance in front of the camera along the view axis (model units)."""
  return camera.distance - points[..., 2]


def to_clip(points: jax.Array, camera: Camera) -> jax.Array:
  """[..., 3] world -> [..., 4] OpenGL clip coordinates for `msma_jax.render.rasterize`.

  Perspective: clip w is the depth, so x_ndc = clip_x / w maps exactly to `project`'s pixel x via
  pixel = (x_ndc + 1) / 2 · W, and pixel y = (1 - y_ndc) / 2 · H. z uses the standard OpenGL depth
  mapping of [near, far] to [-1, 1]. Weak perspective: w = 1 and z is linear in depth.
  """
  h, w = camera.image_size
  cx, cy = camera.principal
  n, f = camera.near, camera.far
  eye = to_eye(points, camera)
  x, y, z = eye[..., 0], eye[..., 1], eye[..., 2]
  if camera.projection == "weak_perspective":
    s = camera.weak_scale
    ones = jnp.ones_like(x)
    return jnp.stack([2.0 * (s * x + cx) / w - 1.0,
                      1.0 - 2.0 * (cy - s * y) / h,
                      (-z - n) * 2.0 / (f - n) - 1.0,
                      ones], -1)
  d = -z
  return jnp.stack([2.0 * camera.focal / w * x + (2.0 * cx / w - 1.0) * d,
                    2.0 * camera.focal / h * y + (1.0 - 2.0 * cy / h) * d,
                    -(f + n) / (f - n) * z - 2.0 * f * n / (f - n),
                    d], -1)


def clip_to_pixels(clip: jax.Array, image_size: tuple[int, int]) -> jax.Array:
  """[..., 4] clip -> [..., 2] pixel coordinates (the inverse of the viewport mapping in `to_clip`)."""
  h, w = image_size
  ndc = clip[..., :2] / clip[..., 3:4]
  return jnp.stack([(ndc[..., 0] + 1.0) * 0.5 * w, (1.0 - ndc[..., 1]) * 0.5 * h], -1)


def pose_degrees(angles: jax.Array) -> jax.Array:
  """[..., 3] Euler angles (x, y, z) radians -> [..., 3] (yaw, pitch, roll) in degrees."""
  deg = jnp.degrees(angles)
  return jnp.stack([deg[..., 1], deg[..., 0], deg[..., 2]], -1)
