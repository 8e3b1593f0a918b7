"""Networks in Flax NNX: the MSMA encoder (backbones, large-kernel attention, multi-scale fusion,
heads) and, in `msma_jax.models.identity`, the identity-loss face-descriptor networks.

`build_model(config.model, face_model)` builds the configured variant (see `configs/model.py`);
`msma_jax.models.torch_weights` imports torchvision ResNet and Deep3DFaceRecon weights;
`msma_jax.models.sharding` places a model on a mesh.
"""
from msma_jax.models.attention import LKA, AttentionBlock, MultiScaleLKA, lka_radius
from msma_jax.models.encoder import MSMAEncoder, build_model, check_images
from msma_jax.models.errors import ImageInputError, ModelError, WeightImportError
from msma_jax.models.fusion import MultiScaleFusion, resample
from msma_jax.models.heads import AttributeHeads
from msma_jax.models.layers import Policy
from msma_jax.models.mobilenet import MobileNetV2
from msma_jax.models.resnet import ResNet
from msma_jax.models.spec import EncoderSpec, spec_from_config

__all__ = [
    "AttentionBlock", "AttributeHeads", "EncoderSpec", "ImageInputError", "LKA", "MSMAEncoder",
    "MobileNetV2", "ModelError", "MultiScaleFusion", "MultiScaleLKA", "Policy",
    "ResNet", "WeightImportError", "build_model", "check_images", "lka_radius", "resample",
    "spec_from_config",
]
