"""Identity (perceptual) loss networks that work offline.

* `DlibEmbedder`: dlib's 29-layer face-descriptor ResNet (128-D), weights converted from the
  public-domain `dlib_face_recognition_resnet_model_v1.dat` of the PyPI package face-recognition-models,
  with dlib's 150x150 face-chip alignment reimplemented differentiably in JAX.
* `ArcFaceEmbedder`: insightface's IResNet (r18/r34/r50/r100/r200, 512-D) loaded from the ONNX files
  users already have (w600k_r50.onnx, glint360k r100), with the standard 5-point 112x112 crop.
* `make_identity_loss('none' | 'dlib' | 'arcface_onnx:<path>')` -> `IdentityLoss`, a pure function
  `loss(params, rendered, photos, landmarks)` = mean(1 - cos(embed(render), embed(photo))).
"""
from msma_jax.models.identity.alignment import (arcface_crop, arcface_transform, dlib_face_chip,
                                                five_points_from_68, similarity_fit)
from msma_jax.models.identity.dlib_format import (ModelFileError, read_dlib_resnet,
                                                  save_dlib_resnet_npz)
from msma_jax.models.identity.dlib_resnet import (DlibResNet, default_dlib_weights_path,
                                                  load_dlib_resnet)
from msma_jax.models.identity.embedders import (ArcFaceEmbedder, DlibEmbedder,
                                                load_arcface_embedder, load_dlib_embedder)
from msma_jax.models.identity.iresnet import IRESNET_DEPTHS, IResNet, IResNetSpec
from msma_jax.models.identity.loss import (IDENTITY_CHOICES, IdentityLoss, cosine_distance,
                                           identity_loss, make_identity_embedder,
                                           make_identity_loss)
from msma_jax.models.identity.onnx_import import read_iresnet_onnx

__all__ = [
    "IDENTITY_CHOICES", "IRESNET_DEPTHS", "ArcFaceEmbedder", "DlibEmbedder", "DlibResNet",
    "IResNet", "IResNetSpec", "IdentityLoss", "ModelFileError", "arcface_crop", "arcface_transform",
    "cosine_distance", "default_dlib_weights_path", "dlib_face_chip", "five_points_from_68",
    "identity_loss", "load_arcface_embedder", "load_dlib_embedder", "load_dlib_resnet",
    "make_identity_embedder", "make_identity_loss", "read_dlib_resnet", "read_iresnet_onnx",
    "save_dlib_resnet_npz", "similarity_fit",
]
