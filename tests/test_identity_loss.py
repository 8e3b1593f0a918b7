"""The identity loss term: config choices, gradient w.r.t. the render, bfloat16, batch sharding."""
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

from msma_jax.models.identity import (IdentityLoss, ModelFileError, cosine_distance,
                                      identity_loss, make_identity_embedder, make_identity_loss)
from test_identity_common import (astronaut, build_iresnet_onnx, dlib_shape, grace_hopper, resize,
                                  to_project_landmarks)


def _face_224(img, box):
  """A 224x224 face crop (what the data pipeline feeds training) and its dlib landmarks."""
  top, left, size = box
  crop = resize(img[top:top + size, left:left + size], 224 / size)
  return crop, to_project_landmarks(dlib_shape(crop))


@pytest.fixture(scope="module")
def batch():
  """photo: the astronaut; render: a blurred, darker copy (same person, imperfect render);
  other: Grace Hopper. Images [1, 224, 224, 3] in [0, 1], landmarks [1, 68, 2]."""
  import cv2
  photo, lm = _face_224(astronaut(), (30, 90, 270))
  other, other_lm = _face_224(grace_hopper(), (110, 120, 300))
  render = cv2.GaussianBlur(photo, (0, 0), 2.0).astype(np.float32) * 0.85

  def f(x):
    return jnp.asarray(np.asarray(x, np.float32)[None] / 255.0)
  return dict(photo=f(photo), render=f(render), other=f(other), lm=jnp.asarray(lm[None]),
              other_lm=jnp.asarray(other_lm[None]))


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
  """'dlib' converts the installed model into $MSMA_JAX_CACHE: a temporary one here."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("MSMA_JAX_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield


@pytest.fixture(scope="module")
def dlib_loss():
  return make_identity_loss("dlib")


@pytest.fixture(scope="module")
def dlib_value_and_grad(dlib_loss):
  """jit(value_and_grad w.r.t. the render) of the float32 dlib loss, compiled once per module."""
  return jax.jit(jax.value_and_grad(dlib_loss, argnums=1))


# ---- config choices ---------------------------------------------------------------------------------

def test_none_is_a_zero_constant_and_bad_choices_are_named(tmp_path):
  off = make_identity_loss("none")
  assert not off.enabled and off.params == {}
  x = jnp.ones((2, 32, 32, 3))
  value = jax.jit(off)(off.params, x, x, jnp.zeros((2, 68, 2)))
  assert value.shape == () and value.dtype == jnp.float32 and float(value) == 0.0
  assert make_identity_embedder(" None ") is None
  for bad in ("vgg", "arcface_onnx", "arcface_onnx:", "none:x", ""):
    with pytest.raises(ValueError, match=f"identity loss '{bad}'"):
      make_identity_loss(bad)
  with pytest.raises(ModelFileError, match="missing.onnx"):
    make_identity_loss(f"arcface_onnx:{tmp_path / 'missing.onnx'}")


def test_arcface_choice_loads_the_onnx_file(tmp_path, batch):
  path = tmp_path / "r18.onnx"
  onnx.save(build_iresnet_onnx(fold_bn=True), str(path))
  loss = make_identity_loss(f"arcface_onnx:{path}")
  assert isinstance(loss, IdentityLoss) and loss.enabled and loss.embedding_size == 16
  emb = jax.jit(loss.embed)(loss.params, batch["photo"], batch["lm"])
  assert emb.shape == (1, 16) and abs(float(jnp.linalg.norm(emb)) - 1) < 1e-5


# ---- the dlib term ----------------------------------------------------------------------------------

def test_dlib_loss_value_and_gradient_wrt_render(dlib_loss, dlib_value_and_grad, batch):
  assert dlib_loss.enabled and dlib_loss.embedding_size == 128
  value_and_grad = dlib_value_and_grad
  p, lm = dlib_loss.params, batch["lm"]
  same, g = value_and_grad(p, batch["render"], batch["photo"], lm, lm)
  identical, _ = value_and_grad(p, batch["photo"], batch["photo"], lm, lm)
  other, _ = value_and_grad(p, batch["other"], batch["photo"], lm, batch["other_lm"])
  assert abs(float(identical)) < 1e-5
  assert 0.0 < float(same) < 0.1 < float(other), (float(same), float(other))
  g = np.asarray(g)
  assert np.isfinite(g).all() and np.abs(g).max() > 0
  # Only pixels inside the face chip matter.
  moving = np.any(g != 0, axis=-1)[0]
  assert 0.1 < moving.mean() < 0.9 and not moving[0, 0] and moving[112, 112]
  # The gradient predicts the change along itself (central difference, a step of ~1 grey level
  # per pixel at most; the network is piecewise linear, so longer steps cross many ReLU kinks).
  norm = float(np.linalg.norm(g))
  step = jnp.asarray(g / norm * 0.003)
  plus, _ = value_and_grad(p, batch["render"] + step, batch["photo"], lm, lm)
  minus, _ = value_and_grad(p, batch["render"] - step, batch["photo"], lm, lm)
  numeric = (float(plus) - float(minus)) / (2 * 0.003)
  assert abs(numeric - norm) <= 0.05 * norm, (numeric, norm)
  # A sample without a face (zero landmarks) must not poison a batch with NaN.
  zeros = jnp.zeros_like(lm)
  value, g0 = value_and_grad(p, batch["render"], batch["photo"], zeros, zeros)
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(g0)).all()


def test_dlib_loss_in_bfloat16(dlib_loss, dlib_value_and_grad, batch):
  """Network in bfloat16, bfloat16 images: loss (float32) near the float32 one, finite gradient."""
  loss16 = make_identity_loss("dlib", dtype=jnp.bfloat16)
  lm = batch["lm"]
  v32, _ = dlib_value_and_grad(dlib_loss.params, batch["render"], batch["photo"], lm, lm)
  v16, g16 = jax.jit(jax.value_and_grad(loss16, argnums=1))(
      loss16.params, batch["render"].astype(jnp.bfloat16), batch["photo"].astype(jnp.bfloat16),
      lm, lm)
  v32, v16 = float(v32), v16
  assert v16.dtype == jnp.float32 and abs(float(v16) - v32) < 0.2 * v32 + 5e-3, (float(v16), v32)
  g16 = np.asarray(g16, np.float32)
  assert np.isfinite(g16).all() and np.abs(g16).max() > 0


def test_weighted_loss_and_cosine_distance(dlib_loss, batch):
  rendered = jnp.concatenate([batch["render"], batch["other"]])
  photos = jnp.concatenate([batch["photo"], batch["photo"]])
  lm = jnp.concatenate([batch["lm"], batch["lm"]])
  render_lm = jnp.concatenate([batch["lm"], batch["other_lm"]])

  @jax.jit
  def run(params, w):
    emb = dlib_loss.embedder(params)
    e_render, e_photo = emb.embed(rendered, render_lm), emb.embed(photos, lm)
    value = identity_loss(emb, rendered, photos, lm, render_lm, weights=w)
    return e_render, e_photo, cosine_distance(e_render, e_photo), value
  e_render, e_photo, per, value = run(dlib_loss.params, jnp.asarray([3.0, 1.0]))
  for e in (e_render, e_photo):                  # unit vectors, float32
    assert e.shape == (2, 128) and e.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(float(per[0]), 1 - float(jnp.sum(e_render[0] * e_photo[0])),
                             atol=1e-6)
  np.testing.assert_allclose(float(value), float((3 * per[0] + per[1]) / 4), rtol=1e-5)
  assert float(per[0]) < float(per[1])
  np.testing.assert_allclose(np.asarray(cosine_distance(2 * per[None], per[None])), [0.0],
                             atol=1e-6)


# ---- sharding ---------------------------------------------------------------------------------------

def test_loss_is_a_pure_function_under_batch_sharding(tmp_path):
  """Two virtual CPU devices: params replicated, images split over the batch -> same value."""
  onnx.save(build_iresnet_onnx(fold_bn=True), str(tmp_path / "r18.onnx"))
  script = textwrap.dedent(f"""
      import os
      os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
      os.environ["JAX_PLATFORMS"] = "cpu"
      import jax, jax.numpy as jnp, numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from msma_jax.models.identity import make_identity_loss
      loss = make_identity_loss("arcface_onnx:{tmp_path / 'r18.onnx'}")
      rng = np.random.default_rng(0)
      photos = jnp.asarray(rng.uniform(0, 1, (4, 128, 128, 3)), jnp.float32)
      rendered = jnp.clip(photos + 0.1 * jnp.asarray(rng.normal(size=photos.shape)), 0, 1)
      base = np.asarray([[40.0, 50.0], [88.0, 50.0], [64.0, 75.0], [45.0, 95.0], [83.0, 95.0]])
      lm = jnp.asarray(base[None] + rng.normal(0, 2, (4, 5, 2)), jnp.float32)
      mesh = Mesh(np.asarray(jax.devices()), ("data",))
      rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
      params = jax.device_put(loss.params, rep)
      sharded = jax.jit(jax.value_and_grad(loss, argnums=1))(
          params, jax.device_put(rendered, data), jax.device_put(photos, data),
          jax.device_put(lm, data))
      single = jax.jit(jax.value_and_grad(loss, argnums=1))(loss.params, rendered, photos, lm)
      assert len(jax.devices()) == 2
      assert sharded[1].sharding.spec == P("data"), sharded[1].sharding
      np.testing.assert_allclose(float(sharded[0]), float(single[0]), rtol=1e-5)
      np.testing.assert_allclose(np.asarray(sharded[1]), np.asarray(single[1]), atol=1e-6)
      print("OK", float(sharded[0]))
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
