"""Weight import: same outputs as PyTorch modules of the same layout; mismatches named clearly.

The PyTorch references are written here with torch.nn (torchvision's key layout, no torchvision),
filled with random weights and batch-norm statistics; the tests need the optional `torch`
(skipped without it). The mismatch tests use NumPy state dicts and always run.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs.model as model_configs   # the encoder's variants (configs/ is installed)
from msma_jax.face_model import BFM_SIZES, CoefficientSizes
from msma_jax.models import WeightImportError, build_model
from msma_jax.models.torch_weights import (load_deep3d_checkpoint, load_torch_file,
                                           load_torchvision_backbone)
from weight_fixtures import deep3d_state, numpy_resnet_state

try:
  import torch
  from torch import nn
except ImportError:      # torch is optional: pip install torch==2.13.0 (CPU build)
  torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (pip install torch==2.13.0)")
EMBEDDED_SIZES = CoefficientSizes(id=63, exp=6, tex=8)


def config(variant, **top):
  c = model_configs.get_model_config(variant)
  for k, v in top.items():
    setattr(c, k, v)
  return c


@nnx.jit
def eval_forward(model, x):
  return model.stages(x), model(x).to_flat()


# ---- PyTorch references (torchvision layout) ------------------------------------------------------

if torch is not None:

  class TorchBasic(nn.Module):
    def __init__(self, cin, width, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(width)
      self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(width)
      self.downsample = (nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False),
                                       nn.BatchNorm2d(width))
                         if stride != 1 or cin != width else None)

    def forward(self, x):
      y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
      return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

  class TorchBottleneck(nn.Module):
    def __init__(self, cin, width, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(width)
      self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(width)
      self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(4 * width)
      self.downsample = (nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride, bias=False),
                                       nn.BatchNorm2d(4 * width))
                         if stride != 1 or cin != 4 * width else None)

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = torch.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
      return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

  class TorchResNet(nn.Module):
    """Returns [C2, C3, C4, C5] (NCHW); `fc` exists, as in torchvision, but is not used."""

    def __init__(self, bottleneck, depths, with_fc=True):
      super().__init__()
      block, exp = (TorchBottleneck, 4) if bottleneck else (TorchBasic, 1)
      self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn1 = nn.BatchNorm2d(64)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
      cin = 64
      for i, (w, d) in enumerate(zip((64, 128, 256, 512), depths)):
        blocks = []
        for j in range(d):
          blocks.append(block(cin, w, 2 if i > 0 and j == 0 else 1))
          cin = w * exp
        setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
      if with_fc:
        self.fc = nn.Linear(cin, 1000)

    def forward(self, x):
      x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
      out = []
      for i in range(1, 5):
        x = getattr(self, f"layer{i}")(x)
        out.append(x)
      return out

  def conv_bn_relu6(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())

  class TorchInvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
      super().__init__()
      hidden = cin * t
      layers = [conv_bn_relu6(cin, hidden, 1)] if t != 1 else []
      layers += [conv_bn_relu6(hidden, hidden, 3, stride, hidden),
                 nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
      self.conv = nn.Sequential(*layers)
      self.residual = stride == 1 and cin == cout

    def forward(self, x):
      return x + self.conv(x) if self.residual else self.conv(x)

  class TorchMobileNetV2(nn.Module):
    """Returns [C2, C3, C4, C5] = outputs of features 3, 6, 13, 18."""

    def __init__(self):
      super().__init__()
      feats = [conv_bn_relu6(3, 32, 3, 2)]
      cin = 32
      for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
          feats.append(TorchInvertedResidual(cin, c, s if i == 0 else 1, t))
          cin = c
      feats.append(conv_bn_relu6(cin, 1280, 1))
      self.features = nn.Sequential(*feats)
      self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, x):
      out = []
      for i, f in enumerate(self.features):
        x = f(x)
        if i in (3, 6, 13, 18):
          out.append(x)
      return out

  class TorchReconNet(nn.Module):
    """Deep3DFaceRecon's net_recon layout: ResNet-50 backbone + 7 final 1x1 conv layers."""

    def __init__(self, depths=(3, 4, 6, 3), bottleneck=True, outputs=(80, 64, 80, 3, 27, 2, 1)):
      super().__init__()
      self.backbone = TorchResNet(bottleneck, depths, with_fc=False)
      c5 = 2048 if bottleneck else 512
      self.final_layers = nn.ModuleList([nn.Conv2d(c5, n, 1, bias=True) for n in outputs])

    def forward(self, x):
      c5 = self.backbone(x)[-1]
      pooled = c5.mean(dim=(2, 3), keepdim=True)
      return torch.flatten(torch.cat([f(pooled) for f in self.final_layers], 1), 1), c5


def randomise(module, calibration, seed=0):
  """Random BN affine parameters and running statistics from one pass over `calibration`.

  The statistics come from images like the test's (16 of them, so no channel's variance rests on a
  handful of C5 pixels): the network is then as well conditioned as a trained one, and float32
  rounding (about 1e-5 of the activations, the same in PyTorch against float64) stays below the
  1e-4 bound instead of being amplified by near-zero variances.
  """
  g = torch.Generator().manual_seed(seed)
  for m in module.modules():
    if isinstance(m, nn.BatchNorm2d):
      m.weight.data = 0.5 + 0.5 * torch.rand(m.weight.shape, generator=g)
      m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
      m.momentum = None          # cumulative average: one pass sets the running statistics
    if isinstance(m, nn.Conv2d) and m.bias is not None:
      m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
  module.train()
  with torch.no_grad():
    module(calibration)
  module.eval()
  return module


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def images(shape=(2, 64, 64, 3), seed=0):
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def assert_close(got, ref, name):
  """max |got - ref| <= 1e-4 x max(1, max |ref|): 1e-4 absolute for outputs of magnitude <= 1.

  Deep feature maps reach magnitudes near 10, where float32 rounding alone (PyTorch's float32
  against its own float64) is a few 1e-4, so those are held to 1e-4 of their magnitude.
  """
  assert got.shape == ref.shape, (name, got.shape, ref.shape)
  err, scale = np.abs(got - ref).max(), max(1.0, float(np.abs(ref).max()))
  assert err <= 1e-4 * scale, (name, err, scale)


def check_stages(model, torch_stages, x):
  stages, _ = eval_forward(model, jnp.asarray(x))
  for name, ref in zip(("C2", "C3", "C4", "C5"), torch_stages):
    assert_close(np.asarray(stages[name]), nhwc(ref), name)


# ---- equal outputs --------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("variant, torch_net", [
    ("r18", lambda: TorchResNet(False, (2, 2, 2, 2))),
    ("mbv2", lambda: TorchMobileNetV2()),
])
def test_torchvision_backbone_import_matches_pytorch(variant, torch_net):
  torch.manual_seed(0)
  net = randomise(torch_net(), nchw(images((16, 64, 64, 3), seed=1)))
  model = build_model(config(variant, input_norm="none"), BFM_SIZES)
  n = load_torchvision_backbone(model, net.state_dict())
  assert n == sum(1 for k in net.state_dict() if not k.endswith("num_batches_tracked")
                  and not k.startswith(("fc.", "classifier.")))
  model.eval()
  x = images(seed=2)
  with torch.no_grad():
    ref = net(nchw(x))
  check_stages(model, ref, x)


@needs_torch
def test_deep3d_checkpoint_import_matches_pytorch(tmp_path):
  torch.manual_seed(0)
  net = TorchReconNet()
  for f in net.final_layers:               # Deep3DFaceRecon zero-initialises them; train a bit
    f.weight.data.normal_(0.0, 0.01)
  randomise(net, nchw(images((16, 64, 64, 3), seed=3)))
  path = tmp_path / "epoch_20.pth"
  torch.save({"net_recon": net.state_dict(), "opt_00": {"state": {}, "param_groups": []}}, path)
  model = build_model(config("deep3d_r50"), BFM_SIZES)
  assert load_deep3d_checkpoint(model, path) == len([
      k for k in net.state_dict() if not k.endswith("num_batches_tracked")]) - 2   # 5+6 joined
  model.eval()
  x = images(seed=4)
  with torch.no_grad():
    ref, ref_c5 = net(nchw(x))
  stages, flat = eval_forward(model, jnp.asarray(x))
  assert flat.shape == (2, 257)
  assert 0.1 < np.abs(ref.numpy()).max() <= 1.5           # coefficient-sized outputs
  np.testing.assert_array_less(np.abs(np.asarray(flat) - ref.numpy()).max(), 1e-4)
  assert_close(np.asarray(stages["C5"]), nhwc(ref_c5), "C5")
  # The same checkpoint, backbone only, into an MSMA model (heads stay at the mean face).
  msma = build_model(config("msma_r50", input_norm="none"), BFM_SIZES)
  assert load_deep3d_checkpoint(msma, path, heads=False) == len(
      [k for k in net.backbone.state_dict() if not k.endswith("num_batches_tracked")])
  msma.eval()
  stages, flat = eval_forward(msma, jnp.asarray(x))
  assert_close(np.asarray(stages["C5"]), nhwc(ref_c5), "C5")
  assert np.all(np.asarray(flat) == 0)


# ---- mismatches (NumPy state dicts, no torch needed) ----------------------------------------------

@pytest.fixture(scope="module")
def r18():
  return build_model(config("r18"), EMBEDDED_SIZES)


def test_numpy_state_dict_loads_with_layout_conversion(r18):
  state = numpy_resnet_state((2, 2, 2, 2), False)
  state["fc.weight"], state["fc.bias"] = np.zeros((1000, 512), np.float32), np.zeros(1000)
  n = load_torchvision_backbone(r18, state)
  assert n == 20 * 5           # 20 convolutions (17 + 3 downsample), each with 4 BN tensors
  np.testing.assert_array_equal(np.asarray(r18.backbone.conv1.kernel[...]),
                                state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(np.asarray(r18.backbone.layer2[0].downsample.conv.kernel[...])[0, 0],
                                state["layer2.0.downsample.0.weight"][:, :, 0, 0].T)


def test_wrong_architecture_is_named(r18):
  state = numpy_resnet_state((3, 4, 6, 3), True)
  with pytest.raises(WeightImportError, match=r"checkpoint looks like resnet50 \(bottleneck blocks "
                     r"\(3, 4, 6, 3\)\); the configured backbone is resnet18"):
    load_torchvision_backbone(r18, state)


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.__setitem__("layer3.1.conv2.weight", np.zeros((256, 256, 5, 5), np.float32)),
     r"'layer3.1.conv2.weight' has shape \(256, 256, 5, 5\), model expects \(256, 256, 3, 3\)"),
    (lambda s: s.pop("layer4.1.bn2.running_var"),
     r"missing 'layer4.1.bn2.running_var' \(model expects shape \(512,\)\)"),
    (lambda s: s.__setitem__("layer5.0.conv1.weight", np.zeros((1, 1, 1, 1), np.float32)),
     r"unexpected tensors \['layer5.0.conv1.weight'\]"),
    (lambda s: s["bn1.weight"].__setitem__(0, np.nan), "'bn1.weight' contains NaN"),
])
def test_single_tensor_mismatches_are_named(r18, edit, match):
  state = numpy_resnet_state((2, 2, 2, 2), False)
  edit(state)
  before = np.asarray(r18.backbone.conv1.kernel[...]).copy()
  with pytest.raises(WeightImportError, match=match):
    load_torchvision_backbone(r18, state)
  np.testing.assert_array_equal(np.asarray(r18.backbone.conv1.kernel[...]), before)   # untouched


def test_deep3d_mismatches_are_named(r18):
  d3 = build_model(config("deep3d_r50", backbone="resnet18"), EMBEDDED_SIZES)
  with pytest.raises(WeightImportError, match=r"final_layers.0 \(id\) has 80 outputs, the face "
                     r"model has 63 id coefficients"):
    load_deep3d_checkpoint(d3, deep3d_state())
  bfm = build_model(config("deep3d_r50", backbone="resnet18"), BFM_SIZES)
  assert load_deep3d_checkpoint(bfm, deep3d_state()) == 100 + 12
  state = deep3d_state()
  state["net_recon"].pop("final_layers.6.bias")
  with pytest.raises(WeightImportError, match=r"missing 'final_layers.5\+6.bias'"):
    load_deep3d_checkpoint(bfm, state)
  msma = build_model(config("msma_r18"), BFM_SIZES)
  with pytest.raises(WeightImportError, match=r"variant 'deep3d_r50'.*fusion.enabled is True.*"
                     r"attention 'mlka'.*input_norm is 'imagenet'"):
    load_deep3d_checkpoint(msma, deep3d_state())
  with pytest.raises(WeightImportError, match="no 'backbone.\\*' tensors"):
    load_deep3d_checkpoint(bfm, {"net_recon": {"conv1.weight": np.zeros(1)}})
  with pytest.raises(WeightImportError, match="checkpoint file not found"):
    load_deep3d_checkpoint(bfm, "/nonexistent/epoch_20.pth")
  with pytest.raises(WeightImportError, match="expected a state dict"):
    load_torchvision_backbone(r18, [1, 2, 3])


@needs_torch
def test_torch_file_errors_are_named(tmp_path):
  bad = tmp_path / "broken.pth"
  bad.write_bytes(b"not a torch file")
  with pytest.raises(WeightImportError, match="broken.pth: torch.load failed"):
    load_torch_file(bad)
