"""Reader for dlib's face-descriptor network file (`dlib_face_recognition_resnet_model_v1.dat`).

dlib serialises a network by recursion over its C++ type: each wrapper (`add_layer`, `add_tag_layer`,
`add_skip_layer`, `add_loss_layer`) first writes a version number and then its sub-network, and only
after the sub-network comes back does an `add_layer` write its own layer details. So the file holds
all wrapper versions from the output inwards, then the input layer, then the layer details from the
input outwards. The wrapper nesting is not self-describing, so it is taken from the network's type
(`DLIB_RESNET_BLOCKS` below, dlib's `anet_type` of `dnn_face_recognition_ex.cpp`); every layer's
recorded kind, kernel size, stride, padding and tensor shape is then checked against it.

Primitive encodings (dlib/serialize.h, dlib/float_details.h, dlib/cuda/tensor.h):

* integers: one control byte (low 4 bits: byte count 1..8; bit 0x80: negative) + little-endian bytes;
* floats/doubles: integer mantissa then integer exponent, value = mantissa * 2**exponent
  (exponent 32000/32001/32002 = +inf/-inf/nan);
* strings: integer length + bytes; bools: the character '0' or '1';
* tensors: version 2, then num_samples, k, nr, nc, then k*nr*nc*num_samples little-endian float32.

`read_dlib_resnet(path)` returns the weights as NumPy arrays in the project's layout (convolutions
HWIO, batch-norm already folded into per-channel affine scale/shift by dlib); `save_dlib_resnet_npz`
writes them as the project's `.npz`. Any deviation raises `ModelFileError` naming the file.
"""
from __future__ import annotations

import os
import pathlib
import zipfile

import numpy as np

# (output channels, downsamples) per residual block, input to output (alevel4 ... alevel0).
DLIB_RESNET_BLOCKS: tuple[tuple[int, bool], ...] = (
    ((32, False),) * 3 + ((64, True),) + ((64, False),) * 3 + ((128, True),) + ((128, False),) * 2
    + ((256, True),) + ((256, False),) * 2 + ((256, True),))
DLIB_CHIP_SIZE = 150
DLIB_DESCRIPTOR_SIZE = 128
NPZ_FORMAT = "msma_jax.dlib_resnet.v1"


class ModelFileError(ValueError):
  """A network file (dlib `.dat`, ONNX, converted `.npz`) that is missing, corrupt or unsupported."""


class _Stream:
  """Sequential reader over the bytes of a dlib-serialised file."""

  def __init__(self, data: bytes, path: pathlib.Path):
    self.data, self.pos, self.path = data, 0, path

  def fail(self, what: str) -> ModelFileError:
    return ModelFileError(f"{self.path}: not a dlib face-descriptor network file ({what} at byte "
                          f"{self.pos} of {len(self.data)})")

  def take(self, n: int) -> bytes:
    if self.pos + n > len(self.data):
      raise self.fail(f"unexpected end of file reading {n} bytes")
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def int(self) -> int:
    control = self.take(1)[0]
    size = control & 0x0F
    if size == 0 or size > 8 or control & 0x70:
      raise self.fail(f"bad integer control byte 0x{control:02x}")
    value = int.from_bytes(self.take(size), "little")
    return -value if control & 0x80 else value

  def float(self) -> float:
    mantissa, exponent = self.int(), self.int()
    if exponent >= 32000:
      return {32000: np.inf, 32001: -np.inf}.get(exponent, np.nan)
    return float(np.ldexp(float(mantissa), exponent))

  def string(self, max_len: int = 64) -> str:
    n = self.int()
    if not 0 <= n <= max_len:
      raise self.fail(f"implausible string length {n}")
    raw = self.take(n)
    try:
      return raw.decode("ascii")
    except UnicodeDecodeError:
      raise self.fail("non-ASCII layer name") from None

  def bool(self) -> bool:
    ch = self.take(1)
    if ch not in (b"0", b"1"):
      raise self.fail(f"bad bool byte {ch!r}")
    return ch == b"1"

  def version(self, allowed: tuple[int, ...], what: str) -> int:
    v = self.int()
    if v not in allowed:
      raise self.fail(f"{what} version {v}, expected one of {allowed}")
    return v

  def tensor(self) -> np.ndarray:
    self.version((2,), "tensor")
    shape = tuple(self.int() for _ in range(4))
    if any(s < 0 for s in shape) or np.prod(shape, dtype=np.int64) > len(self.data):
      raise self.fail(f"implausible tensor shape {shape}")
    n = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(self.take(4 * n), "<f4").astype(np.float32).reshape(shape)

  def alias_tensor(self) -> tuple[int, ...]:
    self.version((1,), "alias_tensor")
    return tuple(self.int() for _ in range(4))


# ---- layer details ---------------------------------------------------------------------------------

def _read_details(s: _Stream) -> dict:
  """One layer's details, dispatched on the name dlib writes first (`con_6`, `affine_2`, ...)."""
  name = s.string()
  if name in ("con_4", "con_5", "con_6"):
    params = s.tensor()
    num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (s.int() for _ in range(7))
    filters, _biases = s.alias_tensor(), s.alias_tensor()
    for _ in range(4):
      s.float()                                     # learning-rate / weight-decay multipliers
    use_bias = s.bool() if name != "con_4" else True
    use_relu = s.bool() if name == "con_6" else False
    n_w = int(np.prod(filters))
    flat = params.reshape(-1)
    if flat.size != n_w + (num_filters if use_bias else 0) or filters[0] != num_filters:
      raise s.fail(f"con_ parameter size {flat.size} does not match filters {filters}")
    weight = flat[:n_w].reshape(filters)                                   # [O, I, kh, kw]
    bias = flat[n_w:] if use_bias else np.zeros(num_filters, np.float32)
    return dict(kind="con", weight=weight, bias=bias, kernel=(nr, nc), stride=(stride_y, stride_x),
                padding=(pad_y, pad_x), relu=use_relu)
  if name in ("affine_", "affine_2"):
    params, gamma, _beta = s.tensor(), s.alias_tensor(), s.alias_tensor()
    mode = s.int()
    disabled = s.bool() if name == "affine_2" else False
    n = int(np.prod(gamma))
    flat = params.reshape(-1)
    if mode != 0 or disabled or flat.size != 2 * n:
      raise s.fail(f"affine_ layer (mode {mode}, disabled {disabled}, {flat.size} params) is not "
                   "a per-channel affine of a convolution")
    return dict(kind="affine", scale=flat[:n].copy(), shift=flat[n:].copy())
  if name == "bn_con2":
    # A batch-norm layer saved before dlib converted it to affine_ (the same fold dlib does on load).
    params, gamma, _beta = s.tensor(), s.alias_tensor(), s.alias_tensor()
    for _ in range(2):
      s.tensor()                                    # batch means / inverse stds (training state)
    running_means, running_vars = s.tensor().reshape(-1), s.tensor().reshape(-1)
    s.int(), s.int()                                # num_updates, running_stats_window_size
    for _ in range(4):
      s.float()
    eps = s.float()
    n = int(np.prod(gamma))
    flat = params.reshape(-1)
    scale = flat[:n] / np.sqrt(running_vars + eps)
    return dict(kind="affine", scale=scale.astype(np.float32),
                shift=(flat[n:] - scale * running_means).astype(np.float32))
  if name in ("relu_", "relu_2"):
    disabled = s.bool() if name == "relu_2" else False
    return dict(kind="relu", disabled=disabled)
  if name in ("max_pool_2", "avg_pool_2"):
    nr, nc, stride_y, stride_x, pad_y, pad_x = (s.int() for _ in range(6))
    return dict(kind=name[:-2], kernel=(nr, nc), stride=(stride_y, stride_x), padding=(pad_y, pad_x))
  if name == "add_prev_":
    return dict(kind="add_prev")
  if name in ("fc_2", "fc_3"):
    num_outputs, num_inputs = s.int(), s.int()
    params = s.tensor()
    weights, _biases = s.alias_tensor(), s.alias_tensor()
    bias_mode = s.int()
    for _ in range(4):
      s.float()
    if name == "fc_3":
      s.bool()
    n_w = int(np.prod(weights))
    if bias_mode != 1 or params.size != n_w or n_w != num_inputs * num_outputs:
      raise s.fail(f"fc_ layer (bias mode {bias_mode}, {params.size} params) is not "
                   f"fc_no_bias<{num_outputs}>")
    return dict(kind="fc", weight=params.reshape(num_inputs, num_outputs).copy())
  if name == "input_rgb_image_sized":
    mean = [s.float() for _ in range(3)]
    nr, nc = s.int(), s.int()
    return dict(kind="input", mean_rgb=np.asarray(mean, np.float32), size=(nr, nc))
  raise s.fail(f"unsupported layer '{name}'")


# ---- network structure -----------------------------------------------------------------------------

def _wrapper_kinds() -> list[str]:
  """dlib's type nesting of the face-descriptor network, output to input.

  'L' = add_layer (details follow its sub-network), 'T' = add_tag_layer, 'S' = add_skip_layer.
  Each entry is (wrapper, expected layer kind).
  """
  kinds = [("L", "fc"), ("L", "avg_pool_all")]
  for _, down in reversed(DLIB_RESNET_BLOCKS):
    kinds += [("L", "relu"), ("L", "add_prev")]
    if down:
      kinds += [("L", "avg_pool"), ("S", None), ("T", None)]
    kinds += [("L", "affine"), ("L", "con"), ("L", "relu"), ("L", "affine"), ("L", "con"),
              ("T", None)]
  kinds += [("L", "max_pool"), ("L", "relu"), ("L", "affine")]
  return kinds


def _read_network(s: _Stream) -> tuple[dict, list[dict]]:
  """-> (input layer details, [layer details input->output, excluding the input layer])."""
  s.version((1,), "add_loss_layer")
  loss = s.string()
  if loss not in ("loss_metric_", "loss_metric_2"):
    raise s.fail(f"loss layer '{loss}', expected dlib's loss_metric")
  if loss == "loss_metric_2":
    s.float(), s.float()                            # margin, distance threshold (training only)
  pending = []
  for wrapper, kind in _wrapper_kinds():
    if wrapper == "L":
      pending.append((kind, s.version((1, 2), "add_layer")))
    else:
      s.version((1,), "add_tag_layer" if wrapper == "T" else "add_skip_layer")
  # The innermost add_layer<con_, input_rgb_image_sized<150>> (dlib's input specialisation).
  v_in = s.version((2, 3), "input add_layer")
  input_details = _read_details(s)
  first = _read_details(s)
  for _ in range(3):
    s.bool()
  for _ in range(3):
    s.tensor()                                      # x_grad, cached_output, grad_final
  if v_in >= 3:
    s.int()                                         # sample expansion factor
  layers = [first]
  for kind, version in reversed(pending):
    details = _read_details(s)
    for _ in range(3):
      s.bool()
    for _ in range(3 if version == 2 else 2):
      s.tensor()                                    # x_grad, cached_output(, params_grad)
    if details["kind"] == "avg_pool" and details["kernel"] == (0, 0):
      details["kind"] = "avg_pool_all"             # avg_pool_everything = avg_pool_<0,0,1,1>
    if details["kind"] != kind:
      raise s.fail(f"layer {len(layers)} is '{details['kind']}', the network type has '{kind}'")
    layers.append(details)
  if s.pos != len(s.data):
    raise s.fail(f"{len(s.data) - s.pos} unexpected trailing bytes")
  return input_details, layers


def _check(cond: bool, s: _Stream, what: str):
  if not cond:
    raise s.fail(what)


def _assemble(s: _Stream, input_details: dict, layers: list[dict]) -> dict[str, np.ndarray]:
  """Checks hyper-parameters against dlib's anet_type and lays the weights out for the NNX port."""
  _check(input_details["kind"] == "input" and input_details["size"] == (DLIB_CHIP_SIZE,) * 2, s,
         f"input layer {input_details.get('size')}, expected 150x150 RGB")
  out = {"input_mean_rgb": input_details["mean_rgb"]}
  it = iter(layers)

  def conv(key: str, cin: int, cout: int, k: int, stride: int):
    d = next(it)
    pad = 0 if stride != 1 else k // 2             # dlib's default padding for con_<...>
    _check(d["kind"] == "con" and d["kernel"] == (k, k) and d["stride"] == (stride, stride)
           and d["padding"] == (pad, pad) and d["weight"].shape == (cout, cin, k, k)
           and not d["relu"], s, f"{key}: convolution {d.get('weight', np.empty(0)).shape} "
           f"kernel {d.get('kernel')} stride {d.get('stride')}, expected {cout}x{cin}x{k}x{k} "
           f"stride {stride}")
    out[f"{key}/weight"] = np.ascontiguousarray(d["weight"].transpose(2, 3, 1, 0))   # HWIO
    out[f"{key}/bias"] = d["bias"].astype(np.float32)

  def affine(key: str, c: int):
    d = next(it)
    _check(d["kind"] == "affine" and d["scale"].shape == (c,), s, f"{key}: affine of {c} channels")
    out[f"{key}/scale"], out[f"{key}/shift"] = d["scale"], d["shift"]

  def expect(kind: str, **attrs):
    d = next(it)
    _check(d["kind"] == kind and all(d.get(k) == v for k, v in attrs.items()), s,
           f"expected {kind} {attrs}, found {d}")

  conv("stem/conv", 3, 32, 7, 2)
  affine("stem/affine", 32)
  expect("relu", disabled=False)
  expect("max_pool", kernel=(3, 3), stride=(2, 2), padding=(0, 0))
  cin = 32
  for i, (cout, down) in enumerate(DLIB_RESNET_BLOCKS):
    conv(f"blocks/{i}/conv1", cin, cout, 3, 2 if down else 1)
    affine(f"blocks/{i}/affine1", cout)
    expect("relu", disabled=False)
    conv(f"blocks/{i}/conv2", cout, cout, 3, 1)
    affine(f"blocks/{i}/affine2", cout)
    if down:
      expect("avg_pool", kernel=(2, 2), stride=(2, 2), padding=(0, 0))
    expect("add_prev")
    expect("relu", disabled=False)
    cin = cout
  expect("avg_pool_all")
  d = next(it)
  _check(d["kind"] == "fc" and d["weight"].shape == (cin, DLIB_DESCRIPTOR_SIZE), s,
         f"final fc {d.get('weight', np.empty(0)).shape}, expected ({cin}, 128)")
  out["fc/weight"] = d["weight"]
  return out


def read_dlib_resnet(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Parses `dlib_face_recognition_resnet_model_v1.dat` -> {name: float32 array} (project layout).

  Keys: `input_mean_rgb` [3] (0-255 units), `stem/conv/{weight [7,7,3,32] HWIO, bias [32]}`,
  `stem/affine/{scale, shift}`, `blocks/{i}/{conv1, conv2}/{weight, bias}`,
  `blocks/{i}/{affine1, affine2}/{scale, shift}` for the 14 blocks, `fc/weight` [256, 128].
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ModelFileError(f"{path}: dlib network file not found")
  data = path.read_bytes()
  if data[:3] == b"BZh":
    raise ModelFileError(f"{path}: bzip2-compressed; decompress it first (bunzip2)")
  s = _Stream(data, path)
  try:
    input_details, layers = _read_network(s)
    return _assemble(s, input_details, layers)
  except StopIteration:
    raise s.fail("fewer layers than dlib's face-descriptor network") from None
  except (ValueError, OverflowError) as e:
    if isinstance(e, ModelFileError):
      raise
    raise s.fail(str(e)) from None


def save_dlib_resnet_npz(weights: dict[str, np.ndarray], path: str | os.PathLike) -> pathlib.Path:
  """Writes converted weights as the project's `.npz` (keys as `read_dlib_resnet`, + format tag)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Write-then-rename: processes converting into the same cache never see a partial file.
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
  np.savez(tmp, format=np.asarray(NPZ_FORMAT), **weights)
  os.replace(tmp, path)
  return path


def load_dlib_resnet_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a `.npz` written by `save_dlib_resnet_npz`; checks the format tag and the key set."""
  path = pathlib.Path(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except FileNotFoundError:
    raise ModelFileError(f"{path}: converted dlib network file not found") from None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ModelFileError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
  if str(arrays.pop("format", "")) != NPZ_FORMAT:
    raise ModelFileError(f"{path}: not a converted dlib network (format tag != '{NPZ_FORMAT}')")
  expected = _expected_keys()
  missing = sorted(expected - set(arrays))
  if missing:
    raise ModelFileError(f"{path}: converted dlib network lacks {missing[:4]}"
                         f"{' ...' if len(missing) > 4 else ''}")
  return {k: np.asarray(v, np.float32) for k, v in arrays.items()}


def _expected_keys() -> set[str]:
  keys = {"input_mean_rgb", "stem/conv/weight", "stem/conv/bias", "stem/affine/scale",
          "stem/affine/shift", "fc/weight"}
  for i in range(len(DLIB_RESNET_BLOCKS)):
    for part in ("conv1", "conv2"):
      keys |= {f"blocks/{i}/{part}/weight", f"blocks/{i}/{part}/bias"}
    for part in ("affine1", "affine2"):
      keys |= {f"blocks/{i}/{part}/scale", f"blocks/{i}/{part}/shift"}
  return keys
