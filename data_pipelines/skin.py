"""Skin probability from colour: two 4-component Gaussian mixtures in YCbCr (skin vs. non-skin).

The mixture parameters and the prior P(skin) = 0.8 are the published ones of the Deep3DFaceRecon
baseline (facts reused, implementation our own). Colours are converted with the ITU-R BT.601
studio-swing matrix (Y in [16, 235], Cb/Cr in [16, 240] for RGB in [0, 255]); features are (Y, Cb, Cr).
The posterior is computed in log space, so pixels far from both mixtures do not divide 0 by 0.
"""
from __future__ import annotations

import numpy as np

PRIOR_SKIN = 0.8

# BT.601 RGB [0, 255] -> YCbCr (rows: Y, Cb, Cr) and offsets.
_RGB_TO_YCBCR = np.array([[65.481, 128.553, 24.966],
                          [-37.797, -74.203, 112.0],
                          [112.0, -93.786, -18.214]]) / 255.0
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])

_SKIN = dict(
    weights=[0.24063933, 0.16365987, 0.26034665, 0.33535415],
    means=[[113.71862, 103.39613, 164.08226], [150.19858, 105.18467, 155.51428],
           [183.92976, 107.62468, 152.71820], [114.90524, 113.59782, 151.38217]],
    cov_det=[5692842.5, 5851930.5, 2329131.0, 1585971.0],
    cov_inv=[[[0.0019472069, 0.0020450759, -0.00060243998],
              [0.0020450759, 0.017700525, 0.0051420014],
              [-0.00060243998, 0.0051420014, 0.0081308950]],
             [[0.0027110141, 0.0011036990, 0.0023122299],
              [0.0011036990, 0.010707724, 0.010742856],
              [0.0023122299, 0.010742856, 0.017481629]],
             [[0.0048026871, 0.00022935172, 0.0077668377],
              [0.00022935172, 0.011729696, 0.0081661865],
              [0.0077668377, 0.0081661865, 0.025374353]],
             [[0.0011989699, 0.0022453172, -0.0010748957],
              [0.0022453172, 0.047758564, 0.020332102],
              [-0.0010748957, 0.020332102, 0.024502251]]])
_NONSKIN = dict(
    weights=[0.12791070, 0.31130761, 0.34245777, 0.21832393],
    means=[[99.200851, 112.07533, 140.20602], [110.91392, 125.52969, 130.19237],
           [129.75864, 129.96107, 126.96808], [112.29587, 128.85121, 129.05431]],
    cov_det=[458703648.0, 6466488.0, 90611376.0, 133097.63],
    cov_inv=[[[0.00085371657, 0.00071197288, 0.00023958916],
              [0.00071197288, 0.0025935620, 0.00076557708],
              [0.00023958916, 0.00076557708, 0.0015042332]],
             [[0.00024650150, 0.00045542428, 0.00015019422],
              [0.00045542428, 0.026412144, 0.018419769],
              [0.00015019422, 0.018419769, 0.037497383]],
             [[0.00037054974, 0.00038146760, 0.00040408765],
              [0.00038146760, 0.0085505722, 0.0079136286],
              [0.00040408765, 0.0079136286, 0.010982352]],
             [[0.00013709733, 0.00051228428, 0.00012777430],
              [0.00051228428, 0.28237113, 0.10528370],
              [0.00012777430, 0.10528370, 0.23468947]]])


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
  """[..., 3] RGB in [0, 255] -> [..., 3] (Y, Cb, Cr), BT.601 studio swing."""
  return np.asarray(rgb, np.float64) @ _RGB_TO_YCBCR.T + _YCBCR_OFFSET


def _log_mixture(x: np.ndarray, gmm: dict) -> np.ndarray:
  """[N, 3] features -> [N] log p(x) of the mixture (log-sum-exp over components)."""
  terms = []
  for w, mu, det, inv in zip(gmm["weights"], gmm["means"], gmm["cov_det"], gmm["cov_inv"]):
    d = x - np.asarray(mu)
    maha = np.einsum("ni,ij,nj->n", d, np.asarray(inv), d)
    terms.append(np.log(w) - 0.5 * maha - 1.5 * np.log(2 * np.pi) - 0.5 * np.log(det))
  t = np.stack(terms, 0)
  m = t.max(0)
  return m + np.log(np.exp(t - m).sum(0))


def skin_probability(rgb: np.ndarray) -> np.ndarray:
  """Posterior P(skin | colour) per pixel.

  rgb: [H, W, 3] uint8 RGB (or float in [0, 255]). Returns [H, W] float32 in [0, 1].
  """
  a = np.asarray(rgb)
  if a.ndim != 3 or a.shape[-1] != 3:
    raise ValueError(f"skin_probability expects [H, W, 3] RGB, got {a.shape}")
  x = rgb_to_ycbcr(a.reshape(-1, 3))
  logit = (np.log(PRIOR_SKIN) + _log_mixture(x, _SKIN)
           - np.log(1 - PRIOR_SKIN) - _log_mixture(x, _NONSKIN))
  p = 1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))
  return p.reshape(a.shape[:2]).astype(np.float32)


def skin_mask_uint8(rgb: np.ndarray) -> np.ndarray:
  """[H, W] uint8 = round(255 * P(skin)), the form stored in datasets."""
  return np.round(skin_probability(rgb) * 255.0).astype(np.uint8)
