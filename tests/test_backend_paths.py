"""Backend-chosen code paths: every GPU/TPU form, selected by config, run on the CPU against the CPU form.

The forms (configs/render.py, `config.model.conv_impl`):
  render.batch_mode    map (CPU's visibility loop)      vs vmap (accelerators)
  render.chunk_sizing  mesh (~triangle-count chunks)    vs fixed (chunk_fragments per iteration)
  render.materialize   loop (run-time while loop)       vs barrier (optimization_barrier)
  model.conv_impl      matmul (products, patch convs)   vs xla (lax.conv_general_dilated)
  shard_map rendering  over 8 virtual CPU devices       vs one device
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from configs.errors import ConfigError
from msma_jax import camera as cam
from msma_jax.inference.demo import random_coefficients
from msma_jax.render import RenderForms, render_face
from msma_jax.render.rasterize import resolve_form
from msma_jax.train.config_checks import check_render
from multidevice import run_with_devices

CPU_FORMS = RenderForms(batch_mode="map", chunk_sizing="mesh", materialize="loop")
ACCELERATOR_FORMS = RenderForms(batch_mode="vmap", chunk_sizing="fixed", materialize="barrier")


def test_auto_takes_the_cpu_forms_on_the_cpu():
  assert jax.default_backend() == "cpu"
  assert resolve_form("auto", ("auto", "map", "vmap"), "map", "vmap") == "map"
  assert resolve_form("vmap", ("auto", "map", "vmap"), "map", "vmap") == "vmap"
  with pytest.raises(ValueError, match="unknown choice 'cuda'"):
    resolve_form("cuda", ("auto", "map", "vmap"), "map", "vmap")
  forms = RenderForms.from_config(get_config().render)
  assert forms == RenderForms(chunk_fragments=131072, min_chunk_fragments=4096)


@pytest.mark.parametrize("key,value,message", [
    ("batch_mode", "pmap", "config.render.batch_mode must be one of auto, map, vmap, got 'pmap'"),
    ("chunk_sizing", "big", "config.render.chunk_sizing must be one of auto, mesh, fixed"),
    ("materialize", "fence", "config.render.materialize must be one of auto, loop, barrier"),
    ("chunk_fragments", 0, "config.render.chunk_fragments must be >= 1, got 0"),
    ("min_chunk_fragments", -4, "config.render.min_chunk_fragments must be >= 1, got -4"),
])
def test_render_section_is_validated(key, value, message):
  render = get_config().render
  check_render(render)
  render[key] = value
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
    check_render(render)


def _render_and_grad(fm, coeffs, camera, forms):
  """(image [B, H, W, 3], triangle ids, gradient of a photometric-like loss w.r.t. coeffs)."""
  target = jnp.full(camera.image_size + (3,), 0.4)

  def loss(c):
    out = render_face(fm, c, camera, forms=forms)
    return jnp.mean(jnp.abs(out.image - target) * out.mask[..., None]), out
  (_, out), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(coeffs)
  return out.image, out.fragments.triangle_id, g


def test_accelerator_render_forms_equal_the_cpu_forms(embedded):
  """Batching (vmap), fixed chunks (several chunks per level: chunk_fragments 2,048 < 6,736
  triangles) and the optimisation barrier give the CPU forms' ids exactly, images and gradients
  to float32 rounding."""
  camera = cam.Camera.for_face_model(embedded, 48)
  coeffs = random_coefficients(embedded, jax.random.key(3), 3)
  ref = _render_and_grad(embedded, coeffs, camera, CPU_FORMS)
  assert len(np.unique(np.asarray(ref[1]))) > 500
  forms = RenderForms(batch_mode="vmap", chunk_sizing="fixed", chunk_fragments=2048,
                      materialize="barrier")
  image, ids, grads = _render_and_grad(embedded, coeffs, camera, forms)
  np.testing.assert_array_equal(np.asarray(ids), np.asarray(ref[1]))
  np.testing.assert_allclose(np.asarray(image), np.asarray(ref[0]), atol=2e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref[2])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


# 64²: C5 is 2 x 2, so training-mode batch norm on the last stage sees 8 values per channel (at
# 32², 2: its variance is near zero and rounding differences of the convolutions grow 100x).
STEP_SIZE = 64


def _tiny_step_config(conv_impl: str, forms: RenderForms):
  # A plain quarter-width ResNet-18 keeps the two compilations short; the MSMA blocks' convolutions
  # are compared form against form in test_models.py (test_conv_implementations_agree_on_a_model).
  c = get_config("r18")
  c.image_size = STEP_SIZE
  c.model.backbone_width = 0.25
  c.model.conv_impl = conv_impl
  c.data.global_batch_size = 2
  c.optim.name = "sgd"                    # linear in the gradient: rounding differences stay small
  c.optim.learning_rate = 1e-3
  for key in ("batch_mode", "chunk_sizing", "materialize"):
    c.render[key] = getattr(forms, key)
  return c


def _one_step(config, embedded):
  """Metrics and updated model arrays of one train step on a fixed batch (2 images, STEP_SIZE²)."""
  from msma_jax.train.mesh import batch_sharding, make_mesh
  from msma_jax.train.state import create_train_state, initial_model
  from msma_jax.train.step import make_train_step
  size = STEP_SIZE
  camera = cam.Camera.for_face_model(embedded, size)
  mesh = make_mesh(config.mesh)
  ts = create_train_state(config, initial_model(config, embedded)[0], mesh, 10, 10)
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(size=(2, size, size, 3)).astype(np.float32),
           "landmarks": rng.uniform(0.3 * size, 0.7 * size, size=(2, 68, 2)).astype(np.float32),
           "skin_mask": np.ones((2, size, size), np.float32), "valid": np.ones((2,), np.float32)}
  with jax.set_mesh(mesh):
    step = make_train_step(ts, embedded, camera, config, mesh)
    state, metrics = step(ts.state, jax.device_put(batch, batch_sharding(mesh)))
  # state[0]: the model's arrays (parameters and batch-norm statistics), state[1] the optimizer's.
  return jax.device_get(metrics), jax.device_get(jax.tree.leaves(state[0]))


def test_train_step_in_accelerator_forms_equals_cpu_forms(embedded):
  """The whole step (XLA convolutions, vmapped fixed-chunk rendering, barrier) against the CPU's
  (matrix-product convolutions, looped mesh-sized chunks, while-loop materialisation)."""
  cpu_m, cpu_p = _one_step(_tiny_step_config("matmul", CPU_FORMS), embedded)
  acc_m, acc_p = _one_step(_tiny_step_config("xla", ACCELERATOR_FORMS), embedded)
  assert cpu_m["train/skipped"] == 0 and acc_m["train/skipped"] == 0
  # The step's numbers on this batch (measured 2026-12-06; both forms agree to 1e-7 relative).
  for k, v in (("total", 2.821845), ("photometric", 0.5402068), ("landmark", 1113.028),
               ("grad_norm", 7.460887)):
    np.testing.assert_allclose(cpu_m[f"train/{k}"], v, rtol=1e-5, err_msg=k)
  for k in cpu_m:
    np.testing.assert_allclose(acc_m[k], cpu_m[k], rtol=1e-5, err_msg=k)
  assert len(acc_p) == len(cpu_p) > 50
  for a, b in zip(acc_p, cpu_p):     # measured: within 3.3e-6 of each array's largest entry
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def test_sharded_accelerator_forms_equal_single_device_cpu_forms():
  """render_face under shard_map over 8 virtual CPU devices in the accelerator forms, against one
  device in the CPU forms: ids exact, image and gradients to float32 rounding."""
  out = run_with_devices("""
      import jax, jax.numpy as jnp, numpy as np
      from jax.sharding import NamedSharding, PartitionSpec as P
      from msma_jax import camera as cam
      from msma_jax.face_model import load_face_model
      from msma_jax.inference.demo import random_coefficients
      from msma_jax.render import RenderForms, render_face
      fm = load_face_model("embedded")
      camera = cam.Camera.for_face_model(fm, 40)
      coeffs = random_coefficients(fm, jax.random.key(2), 8)
      mesh = jax.make_mesh((4, 2), ("data", "fsdp"))
      batch = NamedSharding(mesh, P(("data", "fsdp")))

      def loss(c, forms, axes):
        o = render_face(fm, c, camera, forms=forms, batch_axes=axes)
        return jnp.mean(o.image * o.mask[..., None]), o
      cpu = RenderForms(batch_mode="map", chunk_sizing="mesh", materialize="loop")
      acc = RenderForms(batch_mode="vmap", chunk_sizing="fixed", materialize="barrier")
      (_, ref), ref_g = jax.jit(jax.value_and_grad(lambda c: loss(c, cpu, None), has_aux=True))(
          coeffs)
      with jax.set_mesh(mesh):
        (_, o), g = jax.jit(jax.value_and_grad(lambda c: loss(c, acc, ("data", "fsdp")),
                                               has_aux=True), in_shardings=(batch,))(
            jax.device_put(coeffs, batch))
      assert len(o.image.sharding.device_set) == 8, o.image.sharding
      np.testing.assert_array_equal(np.asarray(o.fragments.triangle_id),
                                    np.asarray(ref.fragments.triangle_id))
      np.testing.assert_allclose(np.asarray(o.image), np.asarray(ref.image), atol=2e-6)
      for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
      print("OK")
  """)
  assert "OK" in out
