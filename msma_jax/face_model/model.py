"""The linear morphable face model as an immutable pytree, and its decoder.

A `FaceModel` holds arrays (mean shape, bases, triangles, landmark indices, masks) as pytree leaves and
metadata (name, unit, default camera) as static fields, so it can be passed into `jax.jit`, closed over,
or used under `jax.vmap`/`jax.grad` without copies.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import struct

from msma_jax import lighting
from msma_jax.face_model.coefficients import Coefficients, CoefficientSizes


class CameraDefaults(NamedTuple):
  """Pinhole camera that frames this model's mean face in a 224x224 crop (values for 224 pixels).

  focal and principal point are in pixels; distance (camera on +z, looking toward -z), near and far
  are in the model's length unit.
  """
  focal: float
  principal: float
  distance: float
  near: float
  far: float
  image_size: int = 224


@struct.dataclass
class FaceModel:
  """Linear 3DMM: vertices = mean + id_basis·id + exp_basis·exp; albedo = mean + tex_basis·tex.

  Arrays (V vertices, F triangles):
    mean_shape       [V, 3]        model units (see `unit`), right-handed, y up, face toward +z
    id_basis         [V, 3, n_id]  per unit identity coefficient
    exp_basis        [V, 3, n_exp] per unit expression coefficient
    mean_albedo      [V, 3]        linear RGB in [0, 1]
    tex_basis        [V, 3, n_tex] per unit albedo coefficient
    triangles        [F, 3] int32  counter-clockwise seen from outside (outward normals)
    landmark_indices [68] int32    iBUG-68 order, 0-based vertex indices
    skin_mask        [V] float32   weight in [0, 1]: skin used by photometric/reflectance terms
    face_mask        [V] bool      front-face region (evaluation crop)
    uv               [V, 2] or None  texture coordinates in [0, 1], v grows downward
    symmetry         [V] int32 or None  mirror vertex (an involution)
    triangle_neighbors [F, 3] int32 or None  triangle across the edge opposite each vertex (-1 at
                     a boundary); derived at load time, used by antialiasing
    contour_candidates [17, K] int32 or None  per jaw landmark (iBUG 0-16) a band of vertices across
                     the cheek, padded by repeating (`msma_jax.contour`); None: fixed jaw vertices
    point_buf        [V, K] int32 or None  per vertex the triangles around it (-1 pads): when set,
                     vertex normals are Deep3DFaceRecon's (sum of unit triangle normals, see
                     `msma_jax.lighting.point_buf_normals`); None: area-weighted normals
  """
  mean_shape: jax.Array
  id_basis: jax.Array
  exp_basis: jax.Array
  mean_albedo: jax.Array
  tex_basis: jax.Array
  triangles: jax.Array
  landmark_indices: jax.Array
  skin_mask: jax.Array
  face_mask: jax.Array
  uv: Optional[jax.Array] = None
  symmetry: Optional[jax.Array] = None
  triangle_neighbors: Optional[jax.Array] = None
  contour_candidates: Optional[jax.Array] = None
  point_buf: Optional[jax.Array] = None
  name: str = struct.field(pytree_node=False, default="face_model")
  unit: str = struct.field(pytree_node=False, default="mm")
  unit_in_mm: float = struct.field(pytree_node=False, default=1.0)
  camera: CameraDefaults = struct.field(
      pytree_node=False, default=CameraDefaults(1015.0, 112.0, 1000.0, 500.0, 1500.0))
  expression_names: tuple[str, ...] = struct.field(pytree_node=False, default=())
  source: str = struct.field(pytree_node=False, default="")   # the file it was read from, if any

  # ---- sizes -------------------------------------------------------------------------------------
  @property
  def n_vertices(self) -> int:
    return self.mean_shape.shape[0]

  @property
  def n_triangles(self) -> int:
    return self.triangles.shape[0]

  @property
  def sizes(self) -> CoefficientSizes:
    return CoefficientSizes(id=self.id_basis.shape[-1], exp=self.exp_basis.shape[-1],
                            tex=self.tex_basis.shape[-1])

  def zero_coefficients(self, batch_shape: tuple[int, ...] = ()) -> Coefficients:
    """The mean face (frontal, ambient light, at the origin)."""
    return Coefficients.zeros(self.sizes, batch_shape)

  # ---- decoding ----------------------------------------------------------------------------------
  def shape(self, coeffs: Coefficients) -> jax.Array:
    """[..., V, 3] vertices in model space (no pose), model units."""
    return (self.mean_shape
            + jnp.einsum("...k,vck->...vc", coeffs.id, self.id_basis)
            + jnp.einsum("...k,vck->...vc", coeffs.exp, self.exp_basis))

  def albedo(self, coeffs: Coefficients) -> jax.Array:
    """[..., V, 3] linear-RGB albedo (not clipped: clip where colours are displayed)."""
    return self.mean_albedo + jnp.einsum("...k,vck->...vc", coeffs.tex, self.tex_basis)

  def decode(self, coeffs: Coefficients) -> tuple[jax.Array, jax.Array]:
    """Returns (vertices [..., V, 3] model units, albedo [..., V, 3] in ~[0, 1]); pose not applied."""
    return self.shape(coeffs), self.albedo(coeffs)

  @property
  def normal_mode(self) -> str:
    """"point_buf" (Deep3DFaceRecon's vertex normals) or "area" (area-weighted)."""
    return "area" if self.point_buf is None else "point_buf"

  def vertex_normals(self, vertices: jax.Array) -> jax.Array:
    """[..., V, 3] unit vertex normals of `vertices` [..., V, 3] (posed or not) by this model's
    definition (`normal_mode`); every shading, loss, fit and export goes through here."""
    if self.point_buf is None:
      return lighting.vertex_normals(vertices, self.triangles)
    return lighting.point_buf_normals(vertices, self.triangles, self.point_buf)

  def landmarks_3d(self, vertices: jax.Array) -> jax.Array:
    """[..., 68, 3] the landmark vertices of `vertices` [..., V, 3]."""
    return jnp.take(vertices, self.landmark_indices, axis=-2)
