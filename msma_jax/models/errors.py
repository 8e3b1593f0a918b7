"""Errors raised by the encoder: each names the input, field or tensor that does not match."""


class ModelError(ValueError):
  """Base class of the encoder's errors (a `ValueError`, one line naming what is wrong)."""


class ImageInputError(ModelError):
  """Images that are not `[B, H, W, 3]` floating point RGB of a usable size."""


class WeightImportError(ModelError):
  """A checkpoint whose tensors do not match the configured network (missing, extra, wrong shape)."""
