#!/usr/bin/env python
"""Identity-loss networks: embedding throughput (images/s) on this machine, with peers.

    python benchmarks/bench_identity.py                 # prints a Markdown table
    python benchmarks/bench_identity.py --quick         # fewer repetitions
    python benchmarks/bench_identity.py --arcface-onnx w600k_r50.onnx   # a real insightface file

Timed, after a warm-up call (compilation excluded), best of --repeats (default 5; the best rather
than the mean because other jobs may share the machine):

* msma_jax embedders (`embed`: differentiable alignment + network + normalisation, jitted) on
  224x224 face crops with 68 landmarks, batch 1 and 16;
* dlib's own `compute_face_descriptor(img, shape)` (C++: chip extraction + network) on the same
  images and landmarks (a list of 16 for batch 16);
* onnxruntime (CPU provider) on already aligned 112x112 crops for the same IResNet, exported to
  ONNX from the same weights (its output is checked against the JAX port before timing).

ArcFace weights are random unless --arcface-onnx is given (throughput does not depend on them).
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout, not an install

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from msma_jax.models.identity import (ArcFaceEmbedder, IResNet, IResNetSpec,  # noqa: E402
                                      load_arcface_embedder, load_dlib_embedder)
from msma_jax.models.identity.iresnet import random_iresnet_params  # noqa: E402
from timing import time_calls  # noqa: E402


def best_time(fn, repeats: int) -> float:
  return time_calls(fn, repeats).best

def face_batch(n: int):
  """n copies of the astronaut's 224x224 face crop (uint8), with dlib's shape and our landmarks."""
  import cv2
  import dlib
  import face_recognition_models as frm
  import skimage.data
  crop = cv2.resize(skimage.data.astronaut()[30:300, 90:360], (224, 224),
                    interpolation=cv2.INTER_AREA)
  rect = dlib.get_frontal_face_detector()(crop, 0)[0]
  shape = dlib.shape_predictor(frm.pose_predictor_model_location())(crop, rect)
  lm = np.asarray([[p.x, p.y] for p in shape.parts()], np.float32) + 0.5
  return np.stack([crop] * n), [shape] * n, np.stack([lm] * n)


def export_iresnet_onnx(spec: IResNetSpec, params: dict, path: str):
  """Our IResNet (folded form) -> ONNX in insightface's layout (input NCHW, (x-127.5)/127.5 outside)."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper
  nodes, inits, n = [], [], [0]

  def const(a):
    n[0] += 1
    name = f"p{n[0]}"
    inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
    return name

  def op(kind, inputs, **attrs):
    n[0] += 1
    out = f"t{n[0]}"
    nodes.append(helper.make_node(kind, inputs, [out], **attrs))
    return out

  def affine(x, key):                              # per-channel scale/shift as BatchNormalization
    c = params[f"{key}/scale"].size
    return op("BatchNormalization", [x, const(params[f"{key}/scale"]),
                                     const(params[f"{key}/shift"]), const(np.zeros(c)),
                                     const(np.ones(c) - 1e-5)], epsilon=1e-5)

  def conv(x, key, stride):
    w = params[f"{key}/weight"].transpose(3, 2, 0, 1)
    k = w.shape[-1]
    y = op("Conv", [x, const(w), const(params[f"{key}/bias"])], kernel_shape=[k, k],
           strides=[stride] * 2, pads=[k // 2] * 4)
    return affine(y, key)

  def prelu(x, key):
    return op("PRelu", [x, const(params[key].reshape(-1, 1, 1))])

  x = prelu(conv("input.1", "stem", 1), "stem/prelu")
  cin = spec.stem_width
  for i, (cout, stride) in enumerate(spec.block_plan()):
    y = affine(x, f"blocks/{i}/bn1")
    y = prelu(conv(y, f"blocks/{i}/conv1", 1), f"blocks/{i}/prelu")
    y = conv(y, f"blocks/{i}/conv2", stride)
    short = conv(x, f"blocks/{i}/downsample", stride) if (stride != 1 or cin != cout) else x
    x, cin = op("Add", [y, short]), cout
  x = op("Flatten", [affine(x, "bn2")], axis=1)
  s = spec.fc_spatial
  w = params["fc/weight"].reshape(s, s, cin, -1).transpose(2, 0, 1, 3).reshape(cin * s * s, -1)
  x = op("Gemm", [x, const(w.T), const(params["fc/bias"])], transB=1)
  out = affine(x, "features")
  graph = helper.make_graph(
      nodes, "iresnet", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                       [None, 3, 112, 112])],
      [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, spec.embedding])], inits)
  onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--repeats", type=int, default=5, help="timed repetitions (best is kept)")
  ap.add_argument("--quick", action="store_true", help="1 repetition")
  ap.add_argument("--arcface-onnx", help="an insightface IResNet .onnx (default: random r50, r100)")
  ap.add_argument("--no-peers", action="store_true", help="skip dlib C++ and onnxruntime")
  args = ap.parse_args(argv)
  repeats = 1 if args.quick else max(1, args.repeats)
  rows = []
  images_u8, shapes, lms = face_batch(16)
  images = jnp.asarray(images_u8 / 255.0, jnp.float32)
  landmarks = jnp.asarray(lms)

  def embed_rate(emb, b):
    f = nnx.jit(lambda e, i, l: e.embed(i, l))
    x, lm = images[:b], landmarks[:b]
    return b / best_time(lambda: f(emb, x, lm).block_until_ready(), repeats)

  dlib_emb = load_dlib_embedder()
  rows.append(("dlib ResNet-29 (128-D)", "msma_jax (JAX, float32)", "align + network",
               embed_rate(dlib_emb, 1), embed_rate(dlib_emb, 16)))
  if not args.no_peers:
    import dlib
    import face_recognition_models as frm
    rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    batch_faces = []
    for s in shapes:
      dets = dlib.full_object_detections()
      dets.append(s)
      batch_faces.append(dets)
    one = lambda: rec.compute_face_descriptor(images_u8[0], shapes[0])          # noqa: E731
    many = lambda: rec.compute_face_descriptor(list(images_u8), batch_faces)   # noqa: E731
    rows.append(("dlib ResNet-29 (128-D)", f"dlib {dlib.__version__} (C++)", "align + network",
                 1 / best_time(one, repeats), 16 / best_time(many, repeats)))

  nets = []
  if args.arcface_onnx:
    emb = load_arcface_embedder(args.arcface_onnx)
    nets.append((f"ArcFace {emb.net.spec.depth_name} ({os.path.basename(args.arcface_onnx)})",
                 emb, args.arcface_onnx))
  else:
    for blocks in ((3, 4, 14, 3), (3, 13, 30, 3)):
      spec = IResNetSpec(stage_blocks=blocks)
      emb = ArcFaceEmbedder(IResNet(spec, random_iresnet_params(spec)))
      nets.append((f"ArcFace IResNet {spec.depth_name} (512-D)", emb, None))
  for name, emb, onnx_path in nets:
    rows.append((name, "msma_jax (JAX, float32)", "align + network", embed_rate(emb, 1),
                 embed_rate(emb, 16)))
    if args.no_peers:
      continue
    import onnxruntime as ort
    crops = np.asarray(nnx.jit(lambda e, i, l: e.align(i, l))(emb, images, landmarks))
    with tempfile.TemporaryDirectory() as tmp:
      path = onnx_path
      if path is None:
        path = os.path.join(tmp, "iresnet.onnx")
        params = {k: np.asarray(v[...]) for k, v in _flat_params(emb.net).items()}
        export_iresnet_onnx(emb.net.spec, params, path)
      opts = ort.SessionOptions()
      opts.intra_op_num_threads = os.cpu_count() or 1
      sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
      x = crops
      if not _graph_normalises(path):                # insightface: normalise outside the graph
        x = (crops - np.asarray(emb.net.input_mean[...])) * np.asarray(emb.net.input_scale[...])
      feed = np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)
      ref = sess.run(None, {sess.get_inputs()[0].name: feed})[0]
      ours = np.asarray(nnx.jit(lambda m, c: m(c))(emb.net, jnp.asarray(crops)))
      err = np.abs(ours - ref).max() / np.abs(ref).max()
      assert err < 1e-4, f"onnxruntime and JAX disagree ({err:.2e})"
      name_in = sess.get_inputs()[0].name
      rate = [b / best_time(lambda b=b: sess.run(None, {name_in: feed[:b]}), repeats)
              for b in (1, 16)]
      rows.append((name, f"onnxruntime {ort.__version__} (CPU)", "network on crops", *rate))

  load = os.getloadavg()
  print(f"# bench_identity.py: {datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, JAX {jax.__version__} ({jax.default_backend()}), "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, best of {repeats}\n")
  print("| network | implementation | timed | batch 1 (img/s) | batch 16 (img/s) |")
  print("| --- | --- | --- | ---: | ---: |")
  for name, impl, what, r1, r16 in rows:
    print(f"| {name} | {impl} | {what} | {r1:.1f} | {r16:.1f} |")
  return 0


def _graph_normalises(path: str) -> bool:
  """Whether the graph's input feeds an elementwise op (normalisation inside the graph)."""
  import onnx
  g = onnx.load(path, load_external_data=False).graph
  inits = {t.name for t in g.initializer}
  name = next(i.name for i in g.input if i.name not in inits)
  return any(n.op_type in ("Sub", "Add", "Mul", "Div") and name in n.input for n in g.node)


def _flat_params(module) -> dict:
  """IResNet module -> {name: Frozen variable} under `IResNetSpec.param_shapes` names."""
  out = {"input/mean": module.input_mean, "input/scale": module.input_scale,
         "stem/prelu": module.stem_prelu, "bn2/scale": module.bn2_scale,
         "bn2/shift": module.bn2_shift, "fc/weight": module.fc_weight, "fc/bias": module.fc_bias,
         "features/scale": module.features_scale, "features/shift": module.features_shift}

  def conv(key, m):
    out.update({f"{key}/weight": m.weight, f"{key}/bias": m.bias, f"{key}/scale": m.scale,
                f"{key}/shift": m.shift})
  conv("stem", module.stem)
  for i, b in enumerate(module.blocks):
    out[f"blocks/{i}/bn1/scale"], out[f"blocks/{i}/bn1/shift"] = b.bn1_scale, b.bn1_shift
    out[f"blocks/{i}/prelu"] = b.prelu
    conv(f"blocks/{i}/conv1", b.conv1)
    conv(f"blocks/{i}/conv2", b.conv2)
    if b.downsample is not None:
      conv(f"blocks/{i}/downsample", b.downsample)
  return out


if __name__ == "__main__":
  sys.exit(main())
