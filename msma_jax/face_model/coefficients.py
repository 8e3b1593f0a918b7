"""The named coefficient structure predicted by the encoder and consumed by the face model.

Layout of the flat vector (Deep3DFaceRecon's order, so 257-d BFM coefficient files interoperate):

    [ id (n_id) | exp (n_exp) | tex (n_tex) | angle (3) | gamma (27) | trans (3) ]

* id, exp, tex: morphable-model coefficients (N(0, 1)-scaled for the embedded model).
* angle: Euler angles in radians (x = pitch, y = yaw, z = roll), R = Rz·Ry·Rx.
* gamma: spherical-harmonics lighting, 3 colour channels x 9 bands (all red bands first).
* trans: translation in model units, applied after rotation.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

ANGLE_DIM = 3
GAMMA_DIM = 27
TRANS_DIM = 3
FIELDS = ("id", "exp", "tex", "angle", "gamma", "trans")


class CoefficientSizes(NamedTuple):
  """Sizes of each coefficient group; `total` is the flat vector length (257 for BFM)."""
  id: int
  exp: int
  tex: int
  angle: int = ANGLE_DIM
  gamma: int = GAMMA_DIM
  trans: int = TRANS_DIM

  @property
  def total(self) -> int:
    return sum(self)

  def slices(self) -> dict[str, slice]:
    """Name -> slice of the flat vector."""
    out, start = {}, 0
    for name, size in zip(FIELDS, self):
      out[name] = slice(start, start + size)
      start += size
    return out


BFM_SIZES = CoefficientSizes(id=80, exp=64, tex=80)


class CoefficientError(ValueError):
  """Coefficients of the wrong size or with non-finite values."""


@struct.dataclass
class Coefficients:
  """Per-face coefficients; every field has shape [..., size] (any leading batch shape)."""
  id: jax.Array
  exp: jax.Array
  tex: jax.Array
  angle: jax.Array
  gamma: jax.Array
  trans: jax.Array

  @property
  def sizes(self) -> CoefficientSizes:
    return CoefficientSizes(*(getattr(self, f).shape[-1] for f in FIELDS))

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return tuple(self.id.shape[:-1])

  def to_flat(self) -> jax.Array:
    """[..., total] flat vector in the documented order."""
    return jnp.concatenate([getattr(self, f) for f in FIELDS], axis=-1)

  @classmethod
  def from_flat(cls, flat, sizes: CoefficientSizes, *, name: str = "coefficients") -> "Coefficients":
    """Splits a [..., sizes.total] vector; raises CoefficientError naming `name` on a size mismatch."""
    if flat.shape[-1] != sizes.total:
      raise CoefficientError(
          f"{name}: flat coefficient vector has length {flat.shape[-1]}, the face model expects "
          f"{sizes.total} (id {sizes.id}, exp {sizes.exp}, tex {sizes.tex}, angle 3, gamma 27, trans 3)")
    return cls(**{f: flat[..., s] for f, s in sizes.slices().items()})

  @classmethod
  def zeros(cls, sizes: CoefficientSizes, batch_shape: tuple[int, ...] = (),
            dtype=jnp.float32) -> "Coefficients":
    """The mean face, frontal, unlit offset only (gamma 0 = ambient 0.8), at the origin."""
    return cls(**{f: jnp.zeros((*batch_shape, n), dtype) for f, n in zip(FIELDS, sizes)})

  @classmethod
  def from_dict(cls, d, *, name: str = "coefficients") -> "Coefficients":
    missing = [f for f in FIELDS if f not in d]
    if missing:
      raise CoefficientError(f"{name}: missing coefficient groups {missing} (need {list(FIELDS)})")
    return cls(**{f: jnp.asarray(d[f], jnp.float32) for f in FIELDS})

  def to_dict(self) -> dict[str, np.ndarray]:
    return {f: np.asarray(getattr(self, f)) for f in FIELDS}

  def replace(self, **updates) -> "Coefficients":
    return dataclasses.replace(self, **updates)


def validate_coefficients(coeffs: Coefficients, sizes: CoefficientSizes, *,
                          name: str = "coefficients") -> Coefficients:
  """Host-side check (not for use inside jit): group sizes match `sizes`, batch shapes agree, finite.

  Raises one CoefficientError naming `name` and the offending group.
  """
  expected = dict(zip(FIELDS, sizes))
  batch = None
  for f in FIELDS:
    a = np.asarray(getattr(coeffs, f))
    if a.ndim == 0 or a.shape[-1] != expected[f]:
      raise CoefficientError(f"{name}: '{f}' has shape {a.shape}, expected [..., {expected[f]}]")
    if batch is None:
      batch = a.shape[:-1]
    elif a.shape[:-1] != batch:
      raise CoefficientError(f"{name}: '{f}' has batch shape {a.shape[:-1]}, 'id' has {batch}")
    if not np.all(np.isfinite(a)):
      raise CoefficientError(f"{name}: '{f}' contains NaN or Inf values")
  return coeffs
