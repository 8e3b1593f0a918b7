"""Encoder: variants and switches, shapes, mean-face start, BN train/eval, dtypes, jit, bad input."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import configs.model as model_configs   # the encoder's variants (configs/ is installed)
from configs.errors import ConfigError
from msma_jax.face_model import BFM_SIZES, Coefficients, CoefficientSizes
from msma_jax.face_model.coefficients import FIELDS
from msma_jax.models import (AttentionBlock, ImageInputError, build_model,
                             spec_from_config)
from msma_jax.models.batchnorm import BatchNorm
from msma_jax.models.resnet import STAGE_STRIDES


SMALL = (2, 64, 64, 3)


def images(shape=SMALL, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def small_config(variant, backbone="resnet18", conv_impl="xla"):
  """A variant's switches on a small backbone (the switches do not depend on it).

  Tests build with XLA's convolutions, which compile fastest; the CPU's matrix-product forms are
  checked against them in test_models_layers.py and by test_conv_implementations_agree_on_a_model.
  """
  c = model_configs.get_model_config(variant)
  c.backbone = backbone
  c.conv_impl = conv_impl
  return c


def perturb_heads(model, seed=1, std=0.05):
  """Replaces the zero-initialised final layers by random ones (so outputs depend on the input)."""
  key = jax.random.key(seed)
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param) and "out" in path and "heads" in path:
      key, sub = jax.random.split(key)
      var[...] = std * jax.random.normal(sub, var.shape, var.dtype)


@nnx.jit
def features_and_coeffs(model, x):
  return model.features(x), model(x)


@nnx.jit
def stages_and_coeffs(model, x):
  return model.stages(x), model(x)


def count_blocks(model, cls):
  return sum(isinstance(m, cls) for _, m in nnx.iter_graph(model))


# ---- config: variants, validation -----------------------------------------------------------------

def test_every_variant_validates_and_unknown_names_fail():
  assert len(model_configs.VARIANTS) == 4 * 6 + 8
  for name in model_configs.VARIANTS:
    spec = spec_from_config(model_configs.get_model_config(name))
    assert spec.variant == name
  assert set(model_configs.ABLATIONS) <= set(model_configs.VARIANTS)
  with pytest.raises(match="unknown model variant 'msma_r51'"):
    model_configs.get_model_config("msma_r51")
  assert model_configs.get_config("r18").model.backbone == "resnet18"


def test_named_variants_set_the_switches_they_name():
  s = lambda v: spec_from_config(model_configs.get_model_config(v))
  assert s("msma_r50").fusion.enabled and s("msma_r50").attention.kind == "mlka"
  assert s("msma_r50").fusion.stages == ("C2", "C3", "C4", "C5")
  assert not s("r34").fusion.enabled and s("r34").attention.kind == "none"
  assert s("r34").backbone == "resnet34" and s("msma_mbv2").backbone == "mobilenet_v2"
  assert s("r50_fusion_lka").attention.kind == "lka" and s("r50_fusion_lka").fusion.enabled
  assert s("msma_r50_c345").fusion.stages == ("C3", "C4", "C5")
  assert s("msma_r50_head_attention").attention.where == ("features", "heads")
  assert s("msma_r50_shared_heads").heads.mode == "shared"
  d3 = s("deep3d_r50")
  assert (d3.input_norm, d3.fusion.enabled, d3.attention.kind) == ("none", False, "none")


@pytest.mark.parametrize("change, match", [
    (lambda c: setattr(c, "backbone", "resnet51"), r"config.model.backbone: unknown value 'resnet51'"),
    (lambda c: setattr(c.fusion, "stages", ("C2", "C6")), r"fusion.stages: unknown value\(s\) \['C6'\]"),
    (lambda c: setattr(c.fusion, "target", "C1"), r"fusion.target: unknown value 'C1'"),
    (lambda c: setattr(c.fusion, "mode", "max"), r"fusion.mode: unknown value 'max'"),
    (lambda c: setattr(c.attention, "kind", "se"), r"attention.kind: unknown value 'se'"),
    (lambda c: setattr(c.attention, "where", ("neck",)), r"attention.where: unknown value\(s\) \['neck'\]"),
    (lambda c: setattr(c.attention, "kernels", ((4, 7, 3),)), r"attention.kernels: group \(4, 7, 3\)"),
    (lambda c: setattr(c.heads, "mode", "grouped"), r"heads.mode: unknown value 'grouped'"),
    (lambda c: setattr(c, "dtype", "float64"), r"config.model.dtype: unknown value 'float64'"),
    (lambda c: setattr(c.sharding, "params", "tp"), r"sharding.params: unknown value 'tp'"),
    (lambda c: setattr(c, "backbone_width", 0.0), r"backbone_width: expected a channel multiplier"),
    (lambda c: (setattr(c, "backbone", "mobilenet_v2"), setattr(c, "backbone_width", 0.5)),
     r"backbone_width: only the ResNets take a width multiplier"),
])
def test_bad_switch_values_name_the_field(change, match):
  c = model_configs.get_model_config("msma_r50")
  change(c)
  with pytest.raises(match=match):
    spec_from_config(c)


def test_inconsistent_or_unknown_fields_fail():
  c = model_configs.get_model_config("r50").to_dict()
  c["attention"]["kind"] = "mlka"
  c["attention"]["where"] = ("stages",)
  with pytest.raises(match="'stages' needs fusion.enabled"):
    spec_from_config(c)
  c = model_configs.get_model_config("r50").to_dict()
  c["fusion"]["widht"] = 128
  with pytest.raises(match=r"config.model.fusion: unknown field\(s\) \['widht'\]"):
    spec_from_config(c)
  c = model_configs.get_model_config("r50").to_dict()
  c["attention"]["kind"], c["attention"]["kernels"] = "lka", ((5, 7, 3), (3, 5, 2))
  with pytest.raises(match="LKA takes one"):
    spec_from_config(c)
  with pytest.raises(match="face_model must be"):
    build_model(model_configs.get_model_config("r18"), "embedded")


# ---- every switch combination of the ablation table: shapes, mean face, structure -------------------

def _switches(variant):
  spec = spec_from_config(model_configs.get_model_config(variant))
  return dataclasses.replace(spec, backbone="x", variant="x", input_norm="x")


# One model per distinct switch combination of the ablation table (the backbone is covered below).
ABLATION_COMBOS = list({_switches(v): v for v in (*model_configs.ABLATIONS, "deep3d_r50")}.values())


@pytest.mark.parametrize("variant", ABLATION_COMBOS)
def test_ablation_shapes_mean_face_and_structure(variant, embedded):
  model = build_model(small_config(variant), embedded)
  spec = model.spec
  x = images()
  feats, coeffs = features_and_coeffs(model, x)
  # Shapes: fused map on the target grid (or C5), coefficients of the face model's sizes.
  stride = STAGE_STRIDES[spec.fusion.target] if spec.fusion.enabled else 32
  width = spec.fusion.width if spec.fusion.enabled else 512
  assert feats.shape == (2, 64 // stride, 64 // stride, width)
  assert isinstance(coeffs, Coefficients) and coeffs.sizes == embedded.sizes
  assert all(getattr(coeffs, f).shape == (2, n) and getattr(coeffs, f).dtype == jnp.float32
             for f, n in zip(FIELDS, embedded.sizes))
  # Mean face: zero coefficients exactly, although the features are not zero.
  assert np.all(np.isfinite(np.asarray(feats))) and float(jnp.abs(feats).max()) > 0.1
  np.testing.assert_array_equal(np.asarray(coeffs.to_flat()), 0.0)
  vertices, albedo = embedded.decode(coeffs)
  np.testing.assert_allclose(np.asarray(vertices[1]), np.asarray(embedded.mean_shape), atol=1e-5)
  np.testing.assert_allclose(np.asarray(albedo[0]), np.asarray(embedded.mean_albedo), atol=1e-6)
  # The switches build what they say: attention blocks where asked, heads as asked.
  att = spec.attention
  expected = 0
  if att.kind != "none":
    expected += att.num_blocks * ("features" in att.where)
    expected += len(spec.fusion.stages) * ("stages" in att.where)
    expected += (6 if spec.heads.mode == "per_attribute" else 1) * ("heads" in att.where)
  assert count_blocks(model, AttentionBlock) == expected
  kinds = {m.kind for _, m in nnx.iter_graph(model) if isinstance(m, AttentionBlock)}
  assert kinds == ({att.kind} if expected else set())
  # Outputs depend on the input once the final layers are trained away from zero.
  perturb_heads(model)
  c2 = features_and_coeffs(model, x)[1].to_flat()
  assert float(jnp.abs(c2[0] - c2[1]).max()) > 1e-4


def test_heads_shared_vs_per_attribute_parameter_counts():
  sizes = CoefficientSizes(id=10, exp=4, tex=6)
  per = build_model(small_config("msma_r50_mlp_heads"), sizes)
  shared_cfg = small_config("msma_r50_mlp_heads")
  shared_cfg.heads.mode = "shared"
  shared = build_model(shared_cfg, sizes)
  count = lambda m: sum(v.size for v in jax.tree.leaves(nnx.state(m.heads, nnx.Param)))
  w, h, total = 256, 256, sizes.total
  assert count(per) == 6 * (w * h + h) + h * total + total
  assert count(shared) == (w * h + h) + h * total + total
  c = features_and_coeffs(shared, images())[1]
  assert c.sizes == sizes and np.all(np.asarray(c.to_flat()) == 0)


# ---- backbones ------------------------------------------------------------------------------------

# Parameters of torchvision's models without their classifier (resnet18 11,689,512 - fc 513,000 ...).
TORCHVISION_BACKBONE_PARAMS = {"resnet18": 11_176_512, "resnet34": 21_284_672,
                               "resnet50": 23_508_032, "mobilenet_v2": 2_223_872}
C5_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v2": 1280}


@pytest.mark.parametrize("backbone", sorted(TORCHVISION_BACKBONE_PARAMS))
def test_backbone_stage_shapes_and_parameter_counts(backbone):
  model = build_model(small_config("r18", backbone), BFM_SIZES)
  n = sum(v.size for v in jax.tree.leaves(nnx.state(model.backbone, nnx.Param)))
  assert n == TORCHVISION_BACKBONE_PARAMS[backbone]
  # 70 x 45: each stride-2 layer maps n -> ceil(n / 2) (PyTorch padding), independent of the code.
  h, w = 70, 45
  stages, coeffs = stages_and_coeffs(model, images((1, h, w, 3)))
  for k, s in enumerate(("C2", "C3", "C4", "C5")):
    hh, ww = h, w
    for _ in range(k + 2):
      hh, ww = math.ceil(hh / 2), math.ceil(ww / 2)
    assert stages[s].shape[:3] == (1, hh, ww), (s, stages[s].shape)
  assert stages["C5"].shape[-1] == C5_CHANNELS[backbone]
  assert model.backbone.stage_channels["C5"] == C5_CHANNELS[backbone]
  assert coeffs.sizes == BFM_SIZES


def test_resnet_width_multiplier_scales_every_stage():
  """backbone_width 0.5: stem 32 and stages 32-64-128-256 channels. Convolutions between scaled
  channels have 1/4 of ResNet-18's parameters; the stem's (3 input channels) and batch norm's 1/2."""
  c = small_config("r18", "resnet18")
  c.backbone_width = 0.5
  model = build_model(c, BFM_SIZES)
  assert model.backbone.stage_channels == {"C2": 32, "C3": 64, "C4": 128, "C5": 256}
  assert model.backbone.conv1.kernel[...].shape[-1] == 32
  n = sum(v.size for v in jax.tree.leaves(nnx.state(model.backbone, nnx.Param)))
  bn = sum(v.size for p, v in nnx.to_flat_state(nnx.state(model.backbone, nnx.Param))
           if any("bn" in str(k) for k in p))
  full_bn = 2 * (64 + 2 * 2 * (64 + 128 + 256 + 512) + 128 + 256 + 512)
  stem = 7 * 7 * 3 * 64
  assert n == (TORCHVISION_BACKBONE_PARAMS["resnet18"] - full_bn - stem) // 4 + (full_bn + stem) // 2
  assert bn == full_bn // 2
  stages, coeffs = stages_and_coeffs(model, images((2, 64, 64, 3)))
  assert [stages[s].shape for s in ("C2", "C3", "C4", "C5")] == [
      (2, 16, 16, 32), (2, 8, 8, 64), (2, 4, 4, 128), (2, 2, 2, 256)]
  assert np.all(np.asarray(coeffs.to_flat()) == 0)       # zero-initialised heads: the mean face


# ---- train / eval, dtypes, jit, training step -----------------------------------------------------

def test_train_eval_batch_norm_the_nnx_way():
  model = build_model(small_config("r50"), BFM_SIZES)
  perturb_heads(model)
  bns = [m for _, m in nnx.iter_graph(model) if isinstance(m, BatchNorm)]
  assert bns and all(not b.use_running_average for b in bns)       # new models train
  a, b, c = images((3, 64, 64, 3))[:, None]
  forward = nnx.jit(lambda m, x: m(x).to_flat())
  mean0 = np.asarray(model.backbone.bn1.mean[...]).copy()
  with_b = forward(model, jnp.concatenate([a, b]))[0]
  with_c = forward(model, jnp.concatenate([a, c]))[0]
  # Training mode: batch statistics, so image a's output depends on its batch partner, and the
  # running averages moved.
  assert float(jnp.abs(with_b - with_c).max()) > 1e-5
  assert not np.allclose(np.asarray(model.backbone.bn1.mean[...]), mean0)
  model.eval()
  assert all(b.use_running_average for b in bns)
  mean1 = np.asarray(model.backbone.bn1.mean[...]).copy()
  with_b = forward(model, jnp.concatenate([a, b]))[0]
  with_c = forward(model, jnp.concatenate([a, c]))[0]
  np.testing.assert_allclose(np.asarray(with_b), np.asarray(with_c), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(model.backbone.bn1.mean[...]), mean1)
  model.train()
  assert all(not b.use_running_average for b in bns)


def test_jit_matches_eager_and_bfloat16_tracks_float32():
  cfg = small_config("msma_r50")
  model = build_model(cfg, BFM_SIZES)
  perturb_heads(model)
  model.eval()
  x = images()
  eager = np.asarray(model(x).to_flat())
  jitted = np.asarray(features_and_coeffs(model, x)[1].to_flat())
  np.testing.assert_allclose(jitted, eager, atol=1e-5)
  assert np.abs(eager).max() > 1e-2
  # bf16 compute, float32 parameters: same parameters, outputs float32 and close.
  cfg.dtype = "bfloat16"
  m16 = build_model(cfg, BFM_SIZES)
  m16.eval()
  nnx.update(m16, nnx.state(model))
  params = jax.tree.leaves(nnx.state(m16, nnx.Param))
  assert all(p.dtype == jnp.float32 for p in params)
  feats16, out16 = features_and_coeffs(m16, x)
  assert feats16.dtype == jnp.bfloat16 and out16.to_flat().dtype == jnp.float32
  err = np.abs(np.asarray(out16.to_flat()) - eager).max()
  assert err < 0.05 * np.abs(eager).max(), err


def test_conv_implementations_agree_on_a_model():
  models = {impl: build_model(small_config("msma_r50", conv_impl=impl), BFM_SIZES)
            for impl in ("xla", "matmul")}
  perturb_heads(models["xla"])
  nnx.update(models["matmul"], nnx.state(models["xla"]))
  x = images()
  out = {impl: np.asarray(features_and_coeffs(m, x)[1].to_flat()) for impl, m in models.items()}
  assert np.abs(out["xla"]).max() > 1e-2
  np.testing.assert_allclose(out["matmul"], out["xla"], atol=1e-5)


def test_training_step_moves_off_the_mean_face():
  model = build_model(small_config("msma_r50"), BFM_SIZES)
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  x = images()
  target = jnp.linspace(-1.0, 1.0, BFM_SIZES.total)

  @nnx.jit
  def step(model, opt, x):
    def loss_fn(model):
      return jnp.mean((model(x).to_flat() - target) ** 2)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss

  stem0 = np.asarray(model.backbone.conv1.kernel[...]).copy()
  scale0 = np.asarray(model.refine[0].scale[...]).copy()
  losses = [float(step(model, opt, x)) for _ in range(4)]
  assert losses[0] == pytest.approx(float(jnp.mean(target ** 2)), rel=1e-6)   # mean face first
  assert losses[-1] < losses[0]
  # Gradients reach the backbone and the zero-initialised attention scale after the heads move.
  assert np.abs(np.asarray(model.backbone.conv1.kernel[...]) - stem0).max() > 0
  assert np.abs(np.asarray(model.refine[0].scale[...]) - scale0).max() > 0


# ---- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, match", [
    (np.zeros((64, 64, 3), np.float32), r"expected shape \[B, H, W, 3\] \(4 axes\), got \(64, 64, 3\)"),
    (np.zeros((2, 64, 64, 4), np.float32), "expected 3 channels .* got 4"),
    (np.zeros((2, 3, 64, 64), np.float32), "looks like PyTorch's NCHW layout"),
    (np.zeros((2, 16, 64, 3), np.float32), ">= 32 pixels .* got 16 x 64"),
    (np.zeros((2, 64, 64, 3), np.uint8), "got dtype uint8"),
])
def test_bad_images_raise_one_clear_error(x, match):
  model = build_model(small_config("r18"), BFM_SIZES)
  with pytest.raises(ImageInputError, match=match):
    model(jnp.asarray(x))
  with pytest.raises(ImageInputError, match=match):
    nnx.jit(lambda m, x: m(x))(model, jnp.asarray(x))
