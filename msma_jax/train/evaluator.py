"""Periodic evaluation on a held-out split, next to the mean-face baseline.

Metrics (means over the held-out faces):
  eval/landmark_nme   2D landmark error normalised by the ground-truth landmarks' bounding-box size
  eval/photometric    the photometric loss term (skin x rendered mask)
  eval/vertex_mm      3D vertex RMSE in mm over the face region after rigid alignment, where the
                      split carries ground-truth coefficients (synthetic data)
and the same under `baseline/` for the mean face (all coefficients 0), computed once.
"""
from __future__ import annotations

import jax
import numpy as np

from msma_jax import camera as cam
from msma_jax.evaluation.metrics import landmark_nme, vertex_rmse
from msma_jax.face_model import Coefficients, FaceModel
from msma_jax.losses import compute_losses
from msma_jax.train.mesh import DATA_AXES, batch_sharding, replicated
from msma_jax.train.step import device_batch_keys, make_predict_fn, render_forms


class Evaluator:
  def __init__(self, batches: list[dict], train_state, face_model: FaceModel,
               camera: cam.Camera, config, mesh):
    self.batches = batches
    self.fm = face_model
    self.mesh = mesh
    self.sharding = batch_sharding(mesh)
    self.predict = make_predict_fn(train_state, mesh)
    self.face_mask = np.asarray(face_model.face_mask)
    loss_config = config.loss
    forms = render_forms(config)

    def terms_and_render(coeffs, batch):
      # Everything the host needs comes back replicated (global over all processes' shards).
      _, terms, out = compute_losses(face_model, coeffs, batch, camera, loss_config,
                                     forms=forms, batch_axes=DATA_AXES)
      gt_shape = (face_model.shape(Coefficients.from_flat(batch["coeffs"], face_model.sizes))
                  if "coeffs" in batch else None)
      return (terms, out.landmarks_2d, out.image, out.mask, face_model.shape(coeffs), gt_shape,
              batch["landmarks"], batch["image"])

    self._terms = jax.jit(terms_and_render, out_shardings=replicated(mesh))
    self.baseline, _ = self._evaluate(
        lambda images: face_model.zero_coefficients((images.shape[0],)))

  def _device(self, batch: dict) -> dict:
    from data_pipelines.device import to_device
    return to_device(device_batch_keys(batch, with_coeffs=True), self.sharding)

  def _evaluate(self, predict, want_panel: bool = False):
    nme, photo, vert = [], [], []
    panel = None
    with jax.set_mesh(self.mesh):
      for i, batch in enumerate(self.batches):
        dev = self._device(batch)
        coeffs = predict(dev["image"])
        coeffs = jax.device_put(coeffs, replicated(self.mesh))
        (terms, lm, image, mask, shape, gt_shape, gt_lm, inputs) = jax.device_get(
            self._terms(coeffs, dev))
        nme.append(landmark_nme(lm, gt_lm))
        photo.append(float(terms["photometric"]))
        if gt_shape is not None:
          vert += [vertex_rmse(s, g, self.face_mask, align="rigid", unit_in_mm=self.fm.unit_in_mm)
                   for s, g in zip(shape, gt_shape)]
        if want_panel and i == 0:
          panel = (inputs, image, mask, gt_lm, lm)
    out = {"landmark_nme": float(np.mean(np.concatenate(nme))), "photometric": float(np.mean(photo))}
    if vert:
      out["vertex_mm"] = float(np.mean(vert))
    return out, panel

  def __call__(self, state) -> tuple[dict, tuple]:
    metrics, panel = self._evaluate(lambda images: self.predict(state, images), want_panel=True)
    out = {f"eval/{k}": v for k, v in metrics.items()}
    out.update({f"baseline/{k}": v for k, v in self.baseline.items()})
    return out, panel
