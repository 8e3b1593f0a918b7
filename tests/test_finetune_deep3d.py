"""configs/finetune_deep3d.py: the recipe validates as its command line gives it, and a random-weight
Deep3DFaceRecon net_recon (ResNet-50, written as a .pth in its key layout) loads onto the MSMA model
the recipe builds -- backbone copied exactly, fusion and attention kept, heads re-initialised and
reported -- after which the forward pass and the recipe's losses on a generated BFM are finite."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx

from configs.errors import ConfigError
from configs.finetune_deep3d import get_config
from msma_jax.train.config_checks import check_config
from bfm_fixtures import write_bfm_front_mat
from weight_fixtures import numpy_resnet_state

torch = pytest.importorskip("torch", reason="writing .pth files needs torch (pip install torch==2.13.0)")
ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 32                       # the smallest crop the encoder takes: keeps the ResNet-50 step cheap


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """(epoch_20.pth, its net_recon state dict as NumPy, BFM_model_front.mat, an existing data dir)."""
  tmp = tmp_path_factory.mktemp("deep3d")
  rng = np.random.default_rng(7)
  state = numpy_resnet_state((3, 4, 6, 3), True, prefix="backbone.", seed=5)   # ResNet-50
  # non-trivial batch-norm tensors, so that a swapped or skipped one shows
  for k, v in list(state.items()):
    if k.endswith((".weight", ".bias", ".running_mean")) and v.ndim == 1:
      state[k] = rng.normal(size=v.shape).astype(np.float32) * 0.1 + (
          1.0 if k.endswith(".weight") else 0.0)
    elif k.endswith(".running_var"):
      state[k] = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
  for i, n in enumerate((80, 64, 80, 3, 27, 2, 1)):
    state[f"final_layers.{i}.weight"] = rng.normal(size=(n, 2048, 1, 1)).astype(np.float32) * 0.01
    state[f"final_layers.{i}.bias"] = rng.normal(size=n).astype(np.float32)
  pth = tmp / "epoch_20.pth"
  torch.save({"net_recon": {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}}, str(pth))
  mat, _ = write_bfm_front_mat(tmp / "BFM_model_front.mat", rng)
  data = tmp / "photos"
  data.mkdir()
  return pth, state, mat, data


def recipe(files):
  pth, _, mat, data = files
  c = get_config()
  c.init.source = f"deep3d:{pth}"
  c.face_model = str(mat)
  c.data.path = str(data)
  return c


def test_the_recipe_is_msma_on_deep3ds_resnet50_and_validates(files, tmp_path):
  c = recipe(files)
  check_config(c)                                          # the train command's validator
  m = c.model
  assert (m.backbone, m.backbone_width, m.input_norm) == ("resnet50", 1.0, "none")
  assert m.fusion.enabled and m.attention.kind == "mlka" and "features" in m.attention.where
  assert c.loss.shape_3d == 0 and c.loss.photometric > 0 and c.loss.landmark > 0
  assert c.init.source.startswith("deep3d:") and not c.init.partial
  # the docstring's command line: every override key exists and the result validates
  from msma_jax.train.main import parse_train_args
  pth, _, mat, data = files
  fv = parse_train_args(["--config", str(ROOT / "configs" / "finetune_deep3d.py"),
                         f"--workdir={tmp_path / 'run'}", f"--config.init.source=deep3d:{pth}",
                         f"--config.face_model={mat}", f"--config.data.path={data}"])
  check_config(fv.config)
  assert fv.config.face_model == str(mat) and fv.config.init.source == f"deep3d:{pth}"
  # a backbone that is not net_recon's is refused when the config is loaded
  with pytest.raises(ConfigError, match="net_recon is a ResNet-50"):
    get_config("msma_r18")


def test_net_recon_loads_onto_the_recipes_model_and_its_forward_pass_is_finite(files):
  from msma_jax import camera as cam
  from msma_jax.face_model import load_face_model
  from msma_jax.models import build_model
  from msma_jax.train.init import apply_init
  from msma_jax.losses import compute_losses
  from msma_jax.train.step import render_forms

  _, state, mat, _ = files
  c = recipe(files)
  c.image_size = SIZE
  fm = load_face_model(c.face_model)
  assert tuple(fm.sizes)[:3] == (80, 64, 80)
  model = build_model(c.model, fm, seed=int(c.seed))
  fusion_before = np.asarray(model.fusion.proj["C5"].conv.kernel[...]).copy()
  report = apply_init(model, c.init, fm.sizes)

  # the backbone equals net_recon's (OIHW -> HWIO for convolutions, batch norm as is)
  b = model.backbone
  hwio = lambda k: state[k].transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(np.asarray(b.conv1.kernel[...]), hwio("backbone.conv1.weight"))
  np.testing.assert_array_equal(np.asarray(b.layer3[5].conv2.kernel[...]),
                                hwio("backbone.layer3.5.conv2.weight"))
  np.testing.assert_array_equal(np.asarray(b.layer4[0].downsample.conv.kernel[...]),
                                hwio("backbone.layer4.0.downsample.0.weight"))
  np.testing.assert_array_equal(np.asarray(b.layer2[3].bn3.var[...]),
                                state["backbone.layer2.3.bn3.running_var"])
  np.testing.assert_array_equal(np.asarray(b.layer1[0].bn1.mean[...]),
                                state["backbone.layer1.0.bn1.running_mean"])
  np.testing.assert_array_equal(np.asarray(b.bn1.scale[...]), state["backbone.bn1.weight"])
  # 53 convolutions (no bias) + 53 batch norms x 4: all of ResNet-50, nothing missing or left over
  assert len(report.loaded) == 53 * 5 and len(report.reshaped) == 53
  assert not report.missing and not report.unused and not report.mismatched
  assert all(k.startswith("backbone.") for k in report.loaded)
  # net_recon's final layers do not fit heads on the fused map: re-initialised, and said so
  assert report.reinitialised and "heads" in report.reinitialised[0]
  assert "reinitialised" in report.table()
  for name in ("id", "exp", "tex", "angle", "gamma", "trans"):
    assert np.all(np.asarray(model.heads.heads[name].out.kernel[...]) == 0)
  assert not np.any(np.asarray(model.heads.heads["trans"].out.bias[...]))
  # fusion and attention are new: kept as initialised, listed as not covered
  assert any(k.startswith("fusion/") for k in report.kept)
  assert any(k.startswith("refine/") for k in report.kept)
  np.testing.assert_array_equal(np.asarray(model.fusion.proj["C5"].conv.kernel[...]), fusion_before)

  # the forward pass a training step takes (batch norm on batch statistics) on two noise crops,
  # and the recipe's losses on its prediction. (A whole jitted step of ResNet-50 + renderer takes
  # over two minutes to compile on a 2-core CPU; the step itself is tested in tests/test_train.py.)
  camera = cam.Camera.for_face_model(fm, SIZE)
  rng = np.random.default_rng(3)
  images = jnp.asarray(rng.uniform(0, 1, (2, SIZE, SIZE, 3)), jnp.float32)
  model.train()
  feats, coeffs = nnx.jit(lambda m, x: (m.features(x), m(x)))(model, images)
  assert feats.shape == (2, SIZE // 16, SIZE // 16, c.model.fusion.width)     # the C4 grid
  assert np.isfinite(np.asarray(feats)).all() and np.abs(np.asarray(feats)).max() > 0
  fields = ("id", "exp", "tex", "angle", "gamma", "trans")
  assert [getattr(coeffs, f).shape for f in fields] == [(2, n) for n in fm.sizes]
  assert all(np.isfinite(np.asarray(getattr(coeffs, f))).all() for f in fields)
  landmarks = jnp.asarray(rng.uniform(4, SIZE - 4, (2, 68, 2)), jnp.float32)
  batch = {"image": images, "landmarks": landmarks,
           "skin_mask": jnp.ones((2, SIZE, SIZE)), "landmarks_valid": jnp.ones((2,))}
  total, terms, _ = jax.jit(lambda co: compute_losses(fm, co, batch, camera, c.loss,
                                                      forms=render_forms(c)))(coeffs)
  assert np.isfinite(float(total)) and float(total) > 0
  assert float(terms["landmark"]) > 0 and float(terms["photometric"]) > 0
  assert "shape_3d" not in terms                           # weakly supervised


def test_imagenet_normalisation_is_refused_for_net_recon(files):
  """Why the recipe sets input_norm none: the importer will not feed net_recon's backbone
  ImageNet-normalised input (one line naming the source, nothing compiled)."""
  from msma_jax.face_model import load_face_model
  from msma_jax.models import build_model
  from msma_jax.train.init import InitError, apply_init
  c = recipe(files)
  c.model.input_norm = "imagenet"
  fm = load_face_model(c.face_model)
  with pytest.raises(InitError, match=r"epoch_20.pth: .*input_norm is 'imagenet'"):
    apply_init(build_model(c.model, fm, seed=0), c.init, fm.sizes)


def test_the_deep3d_r50_variant_fine_tunes_net_recon_whole(files):
  """`configs/finetune_deep3d.py:deep3d_r50` (the baseline without fusion and attention): the final
  layers load onto the heads as well, nothing is re-initialised."""
  from msma_jax.face_model import load_face_model
  from msma_jax.models import build_model
  from msma_jax.train.init import apply_init
  pth, state, mat, data = files
  c = get_config("deep3d_r50")
  c.init.source, c.face_model, c.data.path = f"deep3d:{pth}", str(mat), str(data)
  check_config(c)
  assert c.model.input_norm == "none" and not c.model.fusion.enabled
  fm = load_face_model(c.face_model)
  model = build_model(c.model, fm, seed=0)
  report = apply_init(model, c.init, fm.sizes)
  assert len(report.loaded) == 53 * 5 + 12 and not report.reinitialised
  np.testing.assert_array_equal(np.asarray(model.heads.heads["exp"].out.kernel[...]),
                                state["final_layers.1.weight"][:, :, 0, 0].T)
