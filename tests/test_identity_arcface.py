"""ArcFace IResNet from ONNX against onnxruntime, insightface's crop against OpenCV, bad graphs."""
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from flax import nnx
from onnx import TensorProto, helper, numpy_helper

from msma_jax.models.identity import (ArcFaceEmbedder, IResNet, ModelFileError, arcface_crop,
                                      arcface_transform, five_points_from_68,
                                      load_arcface_embedder, read_iresnet_onnx)
from msma_jax.models.identity.alignment import ARCFACE_REFERENCE_112
from test_identity_common import (astronaut, build_iresnet_onnx, dlib_shape, grace_hopper,
                                  onnxruntime_embed, to_project_landmarks)


@pytest.fixture(scope="module")
def faces():
  """Two real photos: (image, dlib's 68 landmarks, the landmarks of its mirror image)."""
  return [(img, to_project_landmarks(dlib_shape(img)),
           to_project_landmarks(dlib_shape(img[:, ::-1].copy())))
          for img in (astronaut(), grace_hopper())]


def _save(model, path):
  onnx.save(model, str(path))
  return path


# ---- network vs onnxruntime ------------------------------------------------------------------------

@pytest.mark.parametrize("stage_blocks,fold_bn,preprocess", [
    ((2, 2, 2, 2), True, False),       # insightface's released layout: BN folded, no Sub/Mul
    ((2, 2, 2, 2), False, True),       # a plain export: BN nodes, normalisation inside the graph,
                                       # Dropout + Reshape + MatMul + Add for the fc
    ((3, 4, 14, 3), True, False),      # r50 (w600k_r50.onnx), narrow
])
def test_iresnet_matches_onnxruntime(tmp_path, stage_blocks, fold_bn, preprocess):
  widths = (8, 16, 16, 24) if stage_blocks == (3, 4, 14, 3) else (8, 16, 24, 32)
  path = _save(build_iresnet_onnx(stage_blocks, widths=widths, fold_bn=fold_bn,
                                  preprocess=preprocess, seed=sum(stage_blocks),
                                  matmul_fc=preprocess), tmp_path / "net.onnx")
  spec, params = read_iresnet_onnx(path)
  assert spec.stage_blocks == stage_blocks and spec.widths == widths
  assert spec.depth_name == {2: "r18", 3: "r50"}[stage_blocks[0]]
  assert spec.embedding == 16 and spec.input_size == 112
  crops = np.random.default_rng(1).uniform(0, 255, (2, 112, 112, 3)).astype(np.float32)
  ref = onnxruntime_embed(path, crops, preprocess)
  ours = np.asarray(nnx.jit(lambda m, x: m(x))(IResNet(spec, params), jnp.asarray(crops)))
  assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
  cos = np.sum(ours * ref, 1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
  assert cos.min() > 0.99999


def test_r100_layout_is_read(tmp_path):
  path = _save(build_iresnet_onnx((3, 13, 30, 3), widths=(4, 4, 4, 4), embedding=8),
               tmp_path / "r100.onnx")
  spec, params = read_iresnet_onnx(path)
  assert spec.depth_name == "r100" and len(spec.block_plan()) == 49
  assert set(params) == set(spec.param_shapes())


# ---- alignment vs OpenCV/scikit-image (what insightface's norm_crop calls) ---------------------------

def test_arcface_crop_matches_cv2_warp_affine(faces):
  import cv2
  import skimage.transform

  def reference(img, lm):
    five = np.asarray(five_points_from_68(jnp.asarray(lm)), np.float64) - 0.5   # OpenCV pixels
    similarity = skimage.transform.SimilarityTransform
    if hasattr(similarity, "from_estimate"):      # scikit-image >= 0.26
      tform = similarity.from_estimate(five, ARCFACE_REFERENCE_112)
    else:
      tform = similarity()
      tform.estimate(five, ARCFACE_REFERENCE_112)
    crop = cv2.warpAffine(img, tform.params[:2], (112, 112), borderValue=0.0)
    return tform.params[:2], crop.astype(np.float64)

  astro, lm, _ = faces[0]
  cases = [(img, lm) for img, lm, _ in faces]
  # The crop partly outside the photo: both fill with zeros.
  cases.append((astro[100:250, 150:300].copy(), lm - np.asarray([150, 100], np.float32)))
  for img, lm in cases:
    m_ref, ref = reference(img, lm)
    m = np.asarray(arcface_transform(jnp.asarray(lm[None])))[0]
    np.testing.assert_allclose(m, m_ref, atol=1e-4 * np.abs(m_ref).max())
    ours = np.asarray(arcface_crop(jnp.asarray(img[None], jnp.float32), jnp.asarray(lm[None])))[0]
    assert np.abs(ours - ref).max() <= 0.6       # OpenCV rounds to uint8
  assert (ref == 0).mean() > 0.2                 # the last case did reach the border


def test_arcface_embedder_end_to_end(tmp_path, faces):
  """embed = normalise(onnxruntime(crop)): the astronaut and her mirror image in one batch."""
  path = _save(build_iresnet_onnx(fold_bn=True), tmp_path / "net.onnx")
  emb = load_arcface_embedder(path)
  img, lm, flip_lm = faces[0]
  images = jnp.asarray(np.stack([img, img[:, ::-1]]) / 255.0, jnp.float32)
  landmarks = jnp.asarray(np.stack([lm, flip_lm]))
  unit, crops = nnx.jit(lambda e, i, l: (e.embed(i, l), e.align(i, l)))(emb, images, landmarks)
  ref = onnxruntime_embed(path, np.asarray(crops), preprocess=False)
  np.testing.assert_allclose(np.asarray(unit), ref / np.linalg.norm(ref, axis=1, keepdims=True),
                             atol=1e-5)
  assert isinstance(emb, ArcFaceEmbedder) and emb.embedding_size == 16


# ---- bad input --------------------------------------------------------------------------------------

def _plain_cnn() -> onnx.ModelProto:
  w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
  nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
           helper.make_node("Relu", ["c"], ["y"])]
  graph = helper.make_graph(nodes, "cnn",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                            [w])
  return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_bad_onnx_files_raise_one_error_naming_the_file(tmp_path):
  good = build_iresnet_onnx(fold_bn=True)
  raw = good.SerializeToString()
  cases = {
      "random.onnx": np.random.default_rng(0).bytes(2048),
      "truncated.onnx": raw[:len(raw) // 3],
      "empty.onnx": b"",
  }
  for name, data in cases.items():
    (tmp_path / name).write_bytes(data)
  _save(_plain_cnn(), tmp_path / "cnn.onnx")
  _save(build_iresnet_onnx((1, 2, 2, 2), fold_bn=True), tmp_path / "r15.onnx")
  no_prelu = build_iresnet_onnx(fold_bn=True)
  for node in no_prelu.graph.node:
    if node.op_type == "PRelu":
      node.op_type = "LeakyRelu"
      del node.input[1:]
  _save(no_prelu, tmp_path / "leaky.onnx")
  for name in [*cases, "cnn.onnx", "r15.onnx", "leaky.onnx", "missing.onnx"]:
    with pytest.raises(ModelFileError) as e:
      read_iresnet_onnx(tmp_path / name)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / name)) and "\n" not in msg, msg
  with pytest.raises(ModelFileError, match="not a supported depth"):
    read_iresnet_onnx(tmp_path / "r15.onnx")
  spec, _ = read_iresnet_onnx(tmp_path / "r15.onnx", allow_any_depth=True)
  assert spec.stage_blocks == (1, 2, 2, 2) and spec.depth_name is None
  with pytest.raises(ModelFileError, match="PRelu"):
    read_iresnet_onnx(tmp_path / "leaky.onnx")


def test_crop_gradient_reaches_the_image(faces):
  img, lm, _ = faces[0]
  images = jnp.asarray(img[None] / 255.0, jnp.float32)
  g = jax.grad(lambda x: jnp.sum(arcface_crop(x, jnp.asarray(lm[None])) ** 2))(images)
  g = np.asarray(g)
  assert np.isfinite(g).all() and 0.005 < np.mean(g != 0) < 0.5
  # Degenerate landmarks (a padded, face-less sample): finite values and gradients, not NaN.
  zeros = jnp.zeros((1, 68, 2))
  crop, vjp = jax.vjp(lambda x: arcface_crop(x, zeros), images)
  assert np.isfinite(np.asarray(crop)).all()
  assert np.isfinite(np.asarray(vjp(jnp.ones_like(crop))[0])).all()
