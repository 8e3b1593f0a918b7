"""Weight import from PyTorch: torchvision-layout backbones and Deep3DFaceRecon's `net_recon`.

Sources (any mapping of names to tensors or NumPy arrays; `.pth` files need the optional `torch`):

* torchvision ResNet-18/34/50 and MobileNetV2 state dicts (ImageNet weights, keys `conv1.weight`,
  `layer1.0.bn1.running_mean`, `features.3.conv.1.0.weight`, ...). The classifier (`fc.*`,
  `classifier.*`) is skipped; everything else must match the configured backbone exactly.
* Deep3DFaceRecon_pytorch checkpoints (`epoch_20.pth`: a dict whose `net_recon` entry is the state
  dict of `ReconNetWrapper`): `backbone.*` is a torchvision ResNet (ResNet-50 in the release), and
  `final_layers.0..6` are 1x1 convolutions on the pooled C5 features producing id 80, exp 64,
  tex 80, angle 3, gamma 27, (tx, ty) 2 and tz 1 outputs, concatenated in that order (257). They
  map onto the per-attribute linear heads of a model without fusion and attention
  (variant `deep3d_r50`, `input_norm = "none"`: Deep3DFaceRecon feeds RGB in [0, 1] unnormalised).

Layout conversion: conv weights OIHW -> HWIO, 1x1-conv / linear weights [out, in] -> [in, out];
batch norm weight/bias/running_mean/running_var -> scale/bias/mean/var (`num_batches_tracked` is
unused). Any mismatch (missing tensor, unexpected tensor, wrong shape, incompatible switches)
raises one `WeightImportError` that names it.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from msma_jax.face_model.coefficients import FIELDS
from msma_jax.models.errors import WeightImportError
from msma_jax.models.batchnorm import BatchNorm
from msma_jax.models.layers import Conv2D
from msma_jax.models.mobilenet import ConvBNAct, InvertedResidual, MobileNetV2
from msma_jax.models.resnet import ResNet

# (torch key, target variable, converter from the torch array)
Entry = tuple[str, nnx.Variable, Callable[[np.ndarray], np.ndarray]]

# net_recon's final layers in order (name, outputs); 5 and 6 together are trans.
DEEP3D_OUTPUTS = (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27),
                  ("trans_xy", 2), ("trans_z", 1))


def _oihw_to_hwio(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0))


def _identity(w: np.ndarray) -> np.ndarray:
  return w


def _conv(key: str, conv: Conv2D) -> Iterator[Entry]:
  yield f"{key}.weight", conv.kernel, _oihw_to_hwio
  if conv.bias is not None:
    yield f"{key}.bias", conv.bias, _identity


def _bn(key: str, bn: BatchNorm) -> Iterator[Entry]:
  yield f"{key}.weight", bn.scale, _identity
  yield f"{key}.bias", bn.bias, _identity
  yield f"{key}.running_mean", bn.mean, _identity
  yield f"{key}.running_var", bn.var, _identity


def resnet_entries(net: ResNet, prefix: str = "") -> Iterator[Entry]:
  """torchvision ResNet keys (with `prefix`) -> variables of `net`."""
  yield from _conv(prefix + "conv1", net.conv1)
  yield from _bn(prefix + "bn1", net.bn1)
  for li, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4), start=1):
    for bi, blk in enumerate(layer):
      p = f"{prefix}layer{li}.{bi}."
      for j in (1, 2, 3):
        if hasattr(blk, f"conv{j}"):
          yield from _conv(f"{p}conv{j}", getattr(blk, f"conv{j}"))
          yield from _bn(f"{p}bn{j}", getattr(blk, f"bn{j}"))
      if blk.downsample is not None:
        yield from _conv(f"{p}downsample.0", blk.downsample.conv)
        yield from _bn(f"{p}downsample.1", blk.downsample.bn)


def mobilenet_entries(net: MobileNetV2, prefix: str = "") -> Iterator[Entry]:
  """torchvision MobileNetV2 keys (`features.i...`) -> variables of `net`."""
  for i, blk in enumerate(net.features):
    p = f"{prefix}features.{i}."
    if isinstance(blk, ConvBNAct):
      yield from _conv(p + "0", blk.conv)
      yield from _bn(p + "1", blk.bn)
      continue
    assert isinstance(blk, InvertedResidual)
    j = 0
    for unit in (blk.expand, blk.depthwise):
      if unit is not None:
        yield from _conv(f"{p}conv.{j}.0", unit.conv)
        yield from _bn(f"{p}conv.{j}.1", unit.bn)
        j += 1
    yield from _conv(f"{p}conv.{j}", blk.project)
    yield from _bn(f"{p}conv.{j + 1}", blk.bn)


def backbone_entries(backbone: nnx.Module, prefix: str = "") -> list[Entry]:
  if isinstance(backbone, ResNet):
    return list(resnet_entries(backbone, prefix))
  if isinstance(backbone, MobileNetV2):
    return list(mobilenet_entries(backbone, prefix))
  raise WeightImportError(f"no torchvision layout known for backbone {type(backbone).__name__}")


def _to_numpy(value: Any, key: str) -> np.ndarray:
  if hasattr(value, "detach"):                      # torch.Tensor
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
      value = value.float()
    value = value.numpy()
  try:
    return np.asarray(value)
  except Exception as e:
    raise WeightImportError(f"checkpoint tensor '{key}' is not an array ({type(value).__name__})"
                            ) from e


def _guess_resnet(state: Mapping[str, Any], prefix: str) -> str:
  """A human description of the ResNet in `state` (block type and blocks per stage)."""
  depths = []
  for li in range(1, 5):
    n = len({k.split(".")[1] for k in state if k.startswith(f"{prefix}layer{li}.")})
    depths.append(n)
  bottleneck = any(k.startswith(f"{prefix}layer1.0.conv3.") for k in state)
  known = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
           ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
           ("bottleneck", (3, 8, 36, 3)): "resnet152"}
  kind = "bottleneck" if bottleneck else "basic"
  name = known.get((kind, tuple(depths)), "an unknown ResNet")
  return f"{name} ({kind} blocks {tuple(depths)})"


def _describe_mismatch(what: str, problems: list[str], hint: str = "") -> WeightImportError:
  shown = "; ".join(problems[:4]) + (f"; ... ({len(problems)} problems in all)"
                                      if len(problems) > 4 else "")
  return WeightImportError(f"{what}: {shown}{hint}")


@dataclasses.dataclass
class EntryMatch:
  """How a PyTorch state dict lines up with a list of entries (names are the torch keys).

  loaded: (entry index, converted array) of every tensor that fits; reshaped: the loaded keys whose
  layout changed shape on conversion (OIHW -> HWIO, [out, in] -> [in, out]); missing: expected keys
  absent from the source; mismatched: "key: shape" descriptions; unused: source keys no entry took
  (excluding ignored ones); problems: the one-line descriptions an exact import fails with."""
  loaded: list[tuple[int, np.ndarray]]
  reshaped: list[str]
  missing: list[str]
  mismatched: list[str]
  unused: list[str]
  problems: list[str]


def match_entries(entries: list[Entry], state: Mapping[str, Any], *,
                  ignore: Callable[[str], bool] = lambda k: False) -> EntryMatch:
  """Checks `state` against `entries` (presence, converted shape, finiteness); assigns nothing."""
  m = EntryMatch([], [], [], [], [], [])
  used = set()
  for i, (key, var, convert) in enumerate(entries):
    if key not in state:
      m.missing.append(key)
      m.problems.append(f"missing '{key}' (model expects shape {_torch_shape(var, convert)})")
      continue
    used.add(key)
    raw = _to_numpy(state[key], key)
    arr = convert(raw)
    if arr.shape != var.shape:
      want = _torch_shape(var, convert)
      m.mismatched.append(f"{key}: {tuple(raw.shape)} vs {want}")
      m.problems.append(f"'{key}' has shape {tuple(raw.shape)}, model expects {want}")
    elif not np.all(np.isfinite(arr)):
      m.mismatched.append(f"{key}: NaN or Inf")
      m.problems.append(f"'{key}' contains NaN or Inf values")
    else:
      m.loaded.append((i, arr))
      if raw.shape != arr.shape:
        m.reshaped.append(key)
  m.unused = sorted(k for k in state if k not in used and not ignore(k)
                    and not k.endswith("num_batches_tracked"))
  if m.unused:
    m.problems.append(f"unexpected tensors {m.unused[:6]}" + (
        f" and {len(m.unused) - 6} more" if len(m.unused) > 6 else ""))
  return m


def write_entries(entries: list[Entry], loaded: list[tuple[int, np.ndarray]]) -> int:
  """Copies matched arrays into their variables (dtype and sharding of the variable kept)."""
  for i, arr in loaded:
    var = entries[i][1]
    old = var[...]
    var[...] = jax.device_put(jnp.asarray(arr, old.dtype), old.sharding)
  return len(loaded)


def assign_entries(entries: list[Entry], state: Mapping[str, Any], *, what: str,
                   ignore: Callable[[str], bool] = lambda k: False, hint: str = "") -> int:
  """Checks `state` against `entries` (all present, shapes right, nothing extra) and assigns.

  Returns the number of tensors copied. Raises one WeightImportError listing the mismatches;
  nothing is written unless everything matched (a failed import leaves the model as it was).
  """
  m = match_entries(entries, state, ignore=ignore)
  if m.problems:
    raise _describe_mismatch(what, m.problems, hint)
  return write_entries(entries, m.loaded)


def _torch_shape(var: nnx.Variable, convert) -> tuple[int, ...]:
  shape = tuple(var.shape)
  if convert is _oihw_to_hwio:
    return (shape[3], shape[2], shape[0], shape[1])
  if convert is _conv1x1_to_dense:
    return (shape[1], shape[0], 1, 1)
  if len(shape) == 2:
    return (shape[1], shape[0])
  return shape


def load_torch_file(path: str | os.PathLike) -> Mapping[str, Any]:
  """Reads a `.pth`/`.pt` file with `torch.load` on the CPU (tensors only, no code execution)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise WeightImportError(f"{path}: checkpoint file not found")
  try:
    import torch
  except ImportError as e:
    raise WeightImportError(f"{path}: reading PyTorch files needs the optional torch package "
                            "(pip install torch==2.13.0, a CPU build)") from e
  try:
    return torch.load(str(path), map_location="cpu", weights_only=True)
  except Exception as e:
    first = (str(e).strip().splitlines() or [""])[0][:200]   # torch's messages run to pages
    raise WeightImportError(f"{path}: torch.load failed ({type(e).__name__}: {first})") from e


def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """Drops a DataParallel `module.` prefix when every key has it."""
  if state and all(k.startswith(prefix) for k in state):
    return {k[len(prefix):]: v for k, v in state.items()}
  return dict(state)


def _as_state(source: Any, name: str) -> dict[str, Any]:
  if isinstance(source, (str, os.PathLike)):
    source = load_torch_file(source)
  if hasattr(source, "state_dict") and callable(source.state_dict):   # a torch.nn.Module
    source = source.state_dict()
  if not isinstance(source, Mapping):
    raise WeightImportError(f"{name}: expected a state dict (mapping of names to tensors), got "
                            f"{type(source).__name__}")
  return _strip(source, "module.")


def _backbone(model) -> nnx.Module:
  return model.backbone if hasattr(model, "backbone") else model


@dataclasses.dataclass
class TorchImport:
  """What a PyTorch source maps onto a model: the entries, the (re-keyed) state dict, the keys that
  are expected to stay unused, and the texts error messages use."""
  entries: list[Entry]
  state: dict[str, Any]
  ignore: Callable[[str], bool]
  what: str
  hint: str = ""


def torchvision_import(model, source: Any) -> TorchImport:
  """The torchvision ResNet / MobileNetV2 state dict `source` against `model.backbone`."""
  state = _as_state(source, "torchvision weights")
  backbone = _backbone(model)
  hint = ""
  if isinstance(backbone, ResNet) and any(k.startswith("layer1.") for k in state):
    found = _guess_resnet(state, "")
    if not found.startswith(backbone.arch + " "):
      hint = f" (checkpoint looks like {found}; the configured backbone is {backbone.arch})"
  return TorchImport(backbone_entries(backbone), state,
                     lambda k: k.startswith(("fc.", "classifier.")),
                     f"torchvision weights -> {getattr(backbone, 'arch', 'backbone')}", hint)


def load_torchvision_backbone(model, source: Any) -> int:
  """Copies a torchvision ResNet / MobileNetV2 state dict into `model.backbone` (or a backbone).

  source: state dict, `torch.nn.Module` or path of a `.pth` file. The classifier is ignored.
  Returns the number of tensors copied.
  """
  imp = torchvision_import(model, source)
  return assign_entries(imp.entries, imp.state, what=imp.what, ignore=imp.ignore, hint=imp.hint)


def _conv1x1_to_dense(w: np.ndarray) -> np.ndarray:
  return w[:, :, 0, 0].T


def deep3d_head_entries(model) -> list[Entry]:
  """`final_layers.i` keys -> per-attribute linear heads; trans reads the joined layers 5 and 6."""
  heads = model.heads.heads
  entries = []
  for i, name in enumerate(FIELDS):
    dense = heads[name].out
    key = "final_layers.5+6" if name == "trans" else f"final_layers.{i}"
    entries.append((f"{key}.weight", dense.kernel, _conv1x1_to_dense))
    entries.append((f"{key}.bias", dense.bias, _identity))
  return entries


def _check_deep3d_compatible(model) -> None:
  spec = model.spec
  problems = []
  if not isinstance(model.backbone, ResNet):
    problems.append(f"backbone is {spec.backbone}, net_recon is a ResNet")
  if spec.fusion.enabled:
    problems.append("fusion.enabled is True (net_recon pools C5 directly)")
  if spec.attention.at("features") or spec.attention.at("heads"):
    problems.append(f"attention '{spec.attention.kind}' at {spec.attention.where}")
  if spec.heads.mode != "per_attribute" or spec.heads.hidden != 0 or spec.heads.pool != "avg":
    problems.append(f"heads are {spec.heads.mode} / hidden {spec.heads.hidden} / pool "
                    f"{spec.heads.pool} (net_recon: per_attribute, hidden 0, avg)")
  if spec.input_norm != "none":
    problems.append(f"input_norm is '{spec.input_norm}' (net_recon reads RGB in [0, 1]: 'none')")
  if problems:
    raise WeightImportError("Deep3DFaceRecon net_recon needs the configuration of variant "
                            "'deep3d_r50' (plain ResNet, linear per-attribute heads): "
                            + "; ".join(problems))


def deep3d_import(model, source: Any, *, heads: bool = True) -> TorchImport:
  """Deep3DFaceRecon's `net_recon` (`source`: path, checkpoint dict or state dict) against `model`:
  the backbone, and the final 1x1 layers onto the heads when `heads` (checks compatibility)."""
  state = _as_state(source, "Deep3DFaceRecon checkpoint")
  if "net_recon" in state and isinstance(state["net_recon"], Mapping):
    state = _strip(state["net_recon"], "module.")
  if not any(k.startswith("backbone.") for k in state):
    raise WeightImportError("Deep3DFaceRecon checkpoint: no 'backbone.*' tensors (expected the "
                            "checkpoint dict with 'net_recon' or its state dict); found keys "
                            f"{sorted(state)[:5]}")
  if heads:
    _check_deep3d_compatible(model)
  elif model.spec.input_norm != "none":
    raise WeightImportError(f"Deep3DFaceRecon checkpoint: input_norm is "
                            f"'{model.spec.input_norm}', net_recon reads RGB in [0, 1] ('none')")
  backbone = _backbone(model)
  entries = backbone_entries(backbone, "backbone.")
  hint = ""
  found = _guess_resnet(state, "backbone.") if isinstance(backbone, ResNet) else ""
  if found and not found.startswith(backbone.arch + " "):
    hint = f" (checkpoint backbone looks like {found}; the configured backbone is {backbone.arch})"
  view = dict(state)
  if not heads:
    return TorchImport(entries, view, lambda k: k.startswith("final_layers."),
                       "Deep3DFaceRecon net_recon backbone", hint)
  sizes = dict(zip(FIELDS, model.sizes))
  for i, (name, n) in enumerate(DEEP3D_OUTPUTS[:3]):
    w = state.get(f"final_layers.{i}.weight")
    if w is not None and np.shape(w)[0] != sizes[name]:
      raise WeightImportError(
          f"Deep3DFaceRecon checkpoint: final_layers.{i} ({name}) has {np.shape(w)[0]} outputs, "
          f"the face model has {sizes[name]} {name} coefficients (net_recon predicts BFM "
          "coefficients 80/64/80: build the model for the BFM face model)")
  # Deep3DFaceRecon predicts (tx, ty) with layer 5 and tz with layer 6; here trans is one head.
  for part in ("weight", "bias"):
    xy, z = view.pop(f"final_layers.5.{part}", None), view.pop(f"final_layers.6.{part}", None)
    if xy is not None and z is not None:
      view[f"final_layers.5+6.{part}"] = np.concatenate(
          [_to_numpy(xy, f"final_layers.5.{part}"), _to_numpy(z, f"final_layers.6.{part}")], 0)
  return TorchImport(entries + deep3d_head_entries(model), view, lambda k: False,
                     "Deep3DFaceRecon net_recon", hint)


def load_deep3d_checkpoint(model, source: Any, *, heads: bool = True) -> int:
  """Copies Deep3DFaceRecon's `net_recon` (backbone + final 1x1 layers) into `model`.

  source: path of `epoch_*.pth`, the checkpoint dict (with a `net_recon` entry) or the `net_recon`
  state dict itself. heads=False copies the backbone only (e.g. to start MSMA training from it).
  The face model must have BFM sizes (id 80, exp 64, tex 80) when heads are copied.
  Returns the number of tensors copied.
  """
  imp = deep3d_import(model, source, heads=heads)
  return assign_entries(imp.entries, imp.state, what=imp.what, ignore=imp.ignore, hint=imp.hint)
