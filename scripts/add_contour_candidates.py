#!/usr/bin/env python
"""Adds (or refreshes) `contour_candidates` in project face-model .npz files, in place.

    python scripts/add_contour_candidates.py msma_jax/assets/embedded_face_model.npz \
        msma_jax/assets/ict_face_model.npz

The candidates (`msma_jax.contour.contour_candidates`: per jaw landmark a band of vertices across
the cheek, [17, K] int32) are derived from the file's mean shape, landmark indices and triangles;
every other array is copied unchanged. The build scripts of the embedded models call
`with_contour_candidates` themselves; this script updates a committed asset or a `convert-bfm`
output without rebuilding it. A file that is missing or lacks those arrays is one line, exit 2.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import zipfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from msma_jax.contour import contour_candidates  # noqa: E402


def with_contour_candidates(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`arrays` (a face-model .npz's) plus `contour_candidates` from its mean shape and mesh."""
  return {**arrays, "contour_candidates": contour_candidates(
      arrays["mean_shape"], arrays["landmark_indices"], arrays["triangles"])}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("files", nargs="+", type=pathlib.Path)
  args = ap.parse_args()
  for path in args.files:
    try:
      with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
      arrays = with_contour_candidates(arrays)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
      print(f"{path}: not a face-model .npz with mean_shape, landmark_indices and triangles "
            f"({type(e).__name__}: {e})", file=sys.stderr)
      return 2
    np.savez_compressed(path, **arrays)
    print(f"{path}: contour_candidates {arrays['contour_candidates'].shape}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
