"""PyTorch-layout state dicts of random NumPy arrays, written from the layouts (no torch needed)."""
import numpy as np


def numpy_resnet_state(depths, bottleneck, prefix="", seed=0):
  """A torchvision-layout ResNet state dict of random NumPy arrays, written from the layout."""
  rng = np.random.default_rng(seed)
  state = {}

  def conv(key, cout, cin, k):
    state[f"{prefix}{key}.weight"] = rng.normal(size=(cout, cin, k, k)).astype(np.float32) * 0.05

  def bn(key, c):
    for name, v in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
      state[f"{prefix}{key}.{name}"] = np.full(c, v, np.float32)
    state[f"{prefix}{key}.num_batches_tracked"] = np.array(1)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  cin, exp = 64, (4 if bottleneck else 1)
  for i, (w, d) in enumerate(zip((64, 128, 256, 512), depths), start=1):
    for j in range(d):
      p = f"layer{i}.{j}."
      if bottleneck:
        conv(p + "conv1", w, cin, 1), bn(p + "bn1", w)
        conv(p + "conv2", w, w, 3), bn(p + "bn2", w)
        conv(p + "conv3", 4 * w, w, 1), bn(p + "bn3", 4 * w)
      else:
        conv(p + "conv1", w, cin, 3), bn(p + "bn1", w)
        conv(p + "conv2", w, w, 3), bn(p + "bn2", w)
      if j == 0 and (i > 1 or cin != w * exp):
        conv(p + "downsample.0", w * exp, cin, 1), bn(p + "downsample.1", w * exp)
      cin = w * exp
  return state


def deep3d_state(ids=80, c5=512):
  state = {f"backbone.{k}": v for k, v in numpy_resnet_state((2, 2, 2, 2), False).items()}
  for i, n in enumerate((ids, 64, 80, 3, 27, 2, 1)):
    state[f"final_layers.{i}.weight"] = np.zeros((n, c5, 1, 1), np.float32)
    state[f"final_layers.{i}.bias"] = np.zeros(n, np.float32)
  return {"net_recon": state}
