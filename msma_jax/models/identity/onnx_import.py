"""Reads an ArcFace IResNet from an ONNX file (insightface `w600k_r50.onnx`, glint360k r100, ...).

Only the `onnx` package is used: the graph is walked from its input along the data flow and matched
against the IResNet pattern (see `iresnet.py`), and the weights are read from the initialisers.
Variants that exports produce are accepted:

* batch norms as BatchNormalization nodes, or folded into the preceding Conv's bias (insightface's
  released files fold bn2/bn3/downsample-bn into the convolutions; bn1 of each block stays a node);
* optional input normalisation inside the graph (Sub/Add/Mul/Div by constants); without it the
  insightface convention applies: (pixel - 127.5) / 127.5 on RGB 0..255;
* PRelu slopes of shape [C] or [C, 1, 1]; Flatten or Reshape; Gemm or MatMul + Add; Identity and
  Dropout nodes anywhere on the path.

Anything else (other ops, a missing stage, a block count that is not r18/r34/r50/r100/r200 unless
`allow_any_depth`) raises `ModelFileError` naming the file and the node where matching stopped.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from msma_jax.models.identity.dlib_format import ModelFileError
from msma_jax.models.identity.iresnet import IRESNET_DEPTHS, IResNetSpec

_PASS_THROUGH = ("Identity", "Dropout")


class _Graph:
  def __init__(self, model, path: pathlib.Path):
    from onnx import numpy_helper
    self.path = path
    g = model.graph
    self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    self.nodes = list(g.node)
    for node in self.nodes:
      if node.op_type == "Constant":
        for a in node.attribute:
          if a.name == "value":
            self.consts[node.output[0]] = numpy_helper.to_array(a.t)
    self.consumers: dict[str, list] = {}
    for node in self.nodes:
      for name in node.input:
        self.consumers.setdefault(name, []).append(node)
    inputs = [i.name for i in g.input if i.name not in self.consts]
    if len(inputs) != 1:
      raise self.fail(f"expected one image input, found {inputs}")
    self.input = inputs[0]
    self.outputs = [o.name for o in g.output]

  def fail(self, what: str) -> ModelFileError:
    return ModelFileError(f"{self.path}: not an ArcFace IResNet ONNX graph ({what})")

  def users(self, tensor: str) -> list:
    """Consumers of `tensor`, looking through Identity/Dropout nodes."""
    out = []
    for node in self.consumers.get(tensor, []):
      if node.op_type in _PASS_THROUGH:
        out += self.users(node.output[0])
      else:
        out.append(node)
    return out

  def next(self, tensor: str, *ops: str):
    """The single consumer of `tensor`, which must be one of `ops`."""
    users = self.users(tensor)
    if len(users) != 1 or users[0].op_type not in ops:
      found = [f"{u.op_type}({u.name})" for u in users]
      raise self.fail(f"after tensor '{tensor}' expected {'/'.join(ops)}, found {found or 'nothing'}")
    return users[0]

  def maybe(self, tensor: str, op: str):
    users = self.users(tensor)
    return users[0] if len(users) == 1 and users[0].op_type == op else None

  def const(self, node, index: int) -> np.ndarray:
    if index >= len(node.input) or node.input[index] not in self.consts:
      raise self.fail(f"{node.op_type} node '{node.name}' input {index} is not a constant")
    return np.asarray(self.consts[node.input[index]], np.float32)

  @staticmethod
  def attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _bn_affine(g: _Graph, node) -> tuple[np.ndarray, np.ndarray]:
  gamma, beta, mean, var = (g.const(node, i) for i in range(1, 5))
  eps = float(g.attrs(node).get("epsilon", 1e-5))
  scale = gamma / np.sqrt(var + eps)
  return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


def _conv(g: _Graph, tensor: str, params: dict, key: str, k: int, stride: int | None,
          cin: int | None) -> tuple[str, int, int]:
  """Conv (+ optional BatchNormalization) from `tensor`; -> (output tensor, stride, out channels)."""
  node = g.next(tensor, "Conv")
  w = g.const(node, 1)
  a = g.attrs(node)
  strides = tuple(a.get("strides", (1, 1)))
  pads = tuple(a.get("pads", (0, 0, 0, 0)))
  if (w.ndim != 4 or w.shape[2:] != (k, k) or a.get("group", 1) != 1
      or tuple(a.get("dilations", (1, 1))) != (1, 1) or strides[0] != strides[1]
      or (stride is not None and strides[0] != stride) or pads != (k // 2,) * 4
      or (cin is not None and w.shape[1] != cin) or a.get("auto_pad", b"NOTSET") not in
      (b"NOTSET", "NOTSET")):
    raise g.fail(f"Conv '{node.name}': weight {w.shape}, strides {strides}, pads {pads}; expected "
                 f"a {k}x{k} convolution with padding {k // 2}")
  cout = w.shape[0]
  params[f"{key}/weight"] = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
  params[f"{key}/bias"] = g.const(node, 2) if len(node.input) > 2 else np.zeros(cout, np.float32)
  out = node.output[0]
  bn = g.maybe(out, "BatchNormalization")
  if bn is not None:
    params[f"{key}/scale"], params[f"{key}/shift"] = _bn_affine(g, bn)
    out = bn.output[0]
  else:
    params[f"{key}/scale"], params[f"{key}/shift"] = np.ones(cout, np.float32), np.zeros(
        cout, np.float32)
  return out, strides[0], cout


def _prelu(g: _Graph, tensor: str, c: int) -> tuple[str, np.ndarray]:
  node = g.next(tensor, "PRelu")
  slope = g.const(node, 1).reshape(-1)
  if slope.size == 1:
    slope = np.full(c, slope[0], np.float32)
  if slope.shape != (c,):
    raise g.fail(f"PRelu '{node.name}' has {slope.size} slopes for {c} channels")
  return node.output[0], slope


def _input_normalisation(g: _Graph, tensor: str) -> tuple[str, np.ndarray, np.ndarray]:
  """Leading elementwise ops with constants -> (tensor, mean, scale) with y = (x - mean) * scale."""
  a, b = np.ones(3, np.float32), np.zeros(3, np.float32)         # y = a * x + b
  seen = False
  while True:
    users = g.users(tensor)
    if len(users) != 1 or users[0].op_type not in ("Sub", "Add", "Mul", "Div"):
      break
    node = users[0]
    other = [i for i in node.input if i != tensor]
    if len(other) != 1 or other[0] not in g.consts or node.input[0] != tensor:
      raise g.fail(f"input op {node.op_type} '{node.name}' is not 'input (op) constant'")
    c = np.asarray(g.consts[other[0]], np.float32).reshape(-1)
    if c.size not in (1, 3):
      raise g.fail(f"input op {node.op_type} '{node.name}' constant has {c.size} values")
    c = np.broadcast_to(c, (3,))
    op = node.op_type
    if op == "Sub":
      b = b - c
    elif op == "Add":
      b = b + c
    elif op == "Mul":
      a, b = a * c, b * c
    else:
      a, b = a / c, b / c
    tensor, seen = node.output[0], True
  if not seen:                                     # insightface: (x - 127.5) / 127.5
    return tensor, np.full(3, 127.5, np.float32), np.full(3, 1 / 127.5, np.float32)
  return tensor, (-b / a).astype(np.float32), a.astype(np.float32)


def _read(g: _Graph, allow_any_depth: bool) -> tuple[IResNetSpec, dict[str, np.ndarray]]:
  params: dict[str, np.ndarray] = {}
  x, params["input/mean"], params["input/scale"] = _input_normalisation(g, g.input)
  x, stride, stem_width = _conv(g, x, params, "stem", 3, 1, 3)
  x, params["stem/prelu"] = _prelu(g, x, stem_width)
  cin, blocks = stem_width, []                     # blocks: (width, stride, has_downsample)
  while True:
    users = g.users(x)
    bn1 = [u for u in users if u.op_type == "BatchNormalization"]
    if len(bn1) != 1:
      raise g.fail(f"after tensor '{x}' expected a block's BatchNormalization, found "
                   f"{[u.op_type for u in users]}")
    after = g.users(bn1[0].output[0])
    if len(users) == 1 and len(after) == 1 and after[0].op_type in ("Flatten", "Reshape"):
      break                                        # the final bn2 -> flatten
    i = len(blocks)
    params[f"blocks/{i}/bn1/scale"], params[f"blocks/{i}/bn1/shift"] = _bn_affine(g, bn1[0])
    y, _, cout = _conv(g, bn1[0].output[0], params, f"blocks/{i}/conv1", 3, 1, cin)
    y, params[f"blocks/{i}/prelu"] = _prelu(g, y, cout)
    y, stride, _ = _conv(g, y, params, f"blocks/{i}/conv2", 3, None, cout)
    others = [u for u in users if u is not bn1[0]]
    if len(others) != 1 or others[0].op_type not in ("Conv", "Add"):
      raise g.fail(f"block {i} input '{x}' feeds {[u.op_type for u in users]}; expected the "
                   "block's BatchNormalization and a shortcut (Conv or Add)")
    if others[0].op_type == "Conv":
      shortcut = _downsample(g, others[0], params, i, stride, cin)
    else:
      shortcut = x
    add = g.next(y, "Add")
    if sorted(add.input) != sorted([y, shortcut]):
      raise g.fail(f"Add '{add.name}' of block {i} does not join its branch and shortcut")
    has_down = others[0].op_type == "Conv"
    if has_down != (stride != 1 or cin != cout):
      raise g.fail(f"block {i}: stride {stride}, {cin}->{cout} channels, downsample {has_down}")
    blocks.append((cout, stride, has_down))
    cin, x = cout, add.output[0]
  params["bn2/scale"], params["bn2/shift"] = _bn_affine(g, bn1[0])
  flat = g.next(bn1[0].output[0], "Flatten", "Reshape")
  x = _fc(g, flat.output[0], params, cin)
  # Stages: a new one starts at every strided block.
  stage_starts = [i for i, (_, s, _) in enumerate(blocks) if s == 2]
  if len(stage_starts) != 4 or stage_starts[0] != 0:
    raise g.fail(f"{len(blocks)} blocks with strides {[s for _, s, _ in blocks]}: not 4 stages "
                 "each opened by a stride-2 block")
  bounds = stage_starts + [len(blocks)]
  stage_blocks = tuple(bounds[k + 1] - bounds[k] for k in range(4))
  widths = tuple(blocks[s][0] for s in stage_starts)
  if any(blocks[j][0] != widths[k] for k in range(4) for j in range(bounds[k], bounds[k + 1])):
    raise g.fail("block widths change inside a stage")
  spatial2 = params["fc/weight"].shape[0] // widths[3]
  side = round(float(np.sqrt(spatial2)))
  if side * side * widths[3] != params["fc/weight"].shape[0]:
    raise g.fail(f"fc input {params['fc/weight'].shape[0]} is not {widths[3]} x n x n")
  spec = IResNetSpec(stage_blocks=stage_blocks, widths=widths, stem_width=stem_width,
                     embedding=params["fc/weight"].shape[1], input_size=side * 16)
  if spec.depth_name is None and not allow_any_depth:
    raise ModelFileError(
        f"{g.path}: IResNet with {stage_blocks} blocks per stage is not a supported depth "
        f"(supported: {', '.join(f'{v} {k}' for k, v in IRESNET_DEPTHS.items())})")
  # fc rows: ONNX flattens C, H, W; the module flattens H, W, C.
  w = params["fc/weight"]
  params["fc/weight"] = np.ascontiguousarray(
      w.reshape(widths[3], side, side, -1).transpose(1, 2, 0, 3).reshape(w.shape))
  return spec, params


def _downsample(g: _Graph, node, params: dict, i: int, stride: int, cin: int) -> str:
  """The shortcut Conv 1x1 (+ BN) of block i, starting at `node`."""
  key = f"blocks/{i}/downsample"
  w = g.const(node, 1)
  a = g.attrs(node)
  strides = tuple(a.get("strides", (1, 1)))
  pads = tuple(a.get("pads", (0, 0, 0, 0)))
  if (w.ndim != 4 or w.shape[1:] != (cin, 1, 1) or strides != (stride, stride)
      or any(pads) or a.get("group", 1) != 1):
    raise g.fail(f"shortcut Conv '{node.name}': weight {w.shape}, strides {strides}, pads {pads}; "
                 f"expected 1x1 from {cin} channels with stride {stride}")
  cout = w.shape[0]
  params[f"{key}/weight"] = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
  params[f"{key}/bias"] = g.const(node, 2) if len(node.input) > 2 else np.zeros(cout, np.float32)
  out = node.output[0]
  bn = g.maybe(out, "BatchNormalization")
  if bn is not None:
    params[f"{key}/scale"], params[f"{key}/shift"] = _bn_affine(g, bn)
    out = bn.output[0]
  else:
    params[f"{key}/scale"] = np.ones(cout, np.float32)
    params[f"{key}/shift"] = np.zeros(cout, np.float32)
  return out


def _fc(g: _Graph, tensor: str, params: dict, cin: int) -> str:
  """Gemm, or MatMul + Add, then an optional BatchNormalization (features) -> graph output."""
  node = g.next(tensor, "Gemm", "MatMul")
  w = g.const(node, 1)
  if node.op_type == "Gemm":
    a = g.attrs(node)
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
      raise g.fail(f"Gemm '{node.name}' with transA/alpha/beta is not a Linear layer")
    w = w.T if a.get("transB", 0) else w
    bias = g.const(node, 2) if len(node.input) > 2 else np.zeros(w.shape[1], np.float32)
    out = node.output[0]
  else:
    out = node.output[0]
    add = g.maybe(out, "Add")
    if add is not None:
      bias = g.const(add, 1 if add.input[0] == out else 0)
      out = add.output[0]
    else:
      bias = np.zeros(w.shape[1], np.float32)
  if w.ndim != 2 or w.shape[0] % cin:
    raise g.fail(f"fc '{node.name}' weight {w.shape} does not follow {cin} channels")
  params["fc/weight"], params["fc/bias"] = w.astype(np.float32), bias.reshape(-1)
  bn = g.maybe(out, "BatchNormalization")
  if bn is not None:
    params["features/scale"], params["features/shift"] = _bn_affine(g, bn)
    out = bn.output[0]
  else:
    params["features/scale"] = np.ones(w.shape[1], np.float32)
    params["features/shift"] = np.zeros(w.shape[1], np.float32)
  if out not in g.outputs or g.users(out):
    raise g.fail(f"the embedding '{out}' is not the graph's final output {g.outputs}")
  return out


def read_iresnet_onnx(path: str | os.PathLike, *, allow_any_depth: bool = False
                      ) -> tuple[IResNetSpec, dict[str, np.ndarray]]:
  """ONNX file -> (IResNetSpec, params for `IResNet`). Raises `ModelFileError` naming the file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ModelFileError(f"{path}: ONNX file not found")
  try:
    import onnx
  except ImportError:
    raise ModelFileError(f"{path}: reading ONNX needs the 'onnx' package "
                         "(pip install 'msma-jax[identity]')") from None
  try:
    model = onnx.load(str(path))
  except Exception as e:  # noqa: BLE001  (protobuf DecodeError, OSError, ...: not a readable file)
    raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
  if not model.graph.node:
    raise ModelFileError(f"{path}: not a readable ONNX model (empty graph)")
  return _read(_Graph(model, path), allow_any_depth)
