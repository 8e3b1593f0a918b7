"""Contact sheet of the synthetic faces' photo-like options (docs/images/synthetic_photo_like.png).

    python scripts/make_photo_like_sheet.py [--out docs/images/synthetic_photo_like.png] [--size 160]

One row per option of `config.data.synthetic`, each on the same six faces (same seed and
coefficients; rows whose option draws random numbers before the backgrounds get other scenes): the
plain faces, natural scenes, hair / neck / shoulders, occluders, camera
artefacts, a wider lighting range, detector-like framing, and all of them together (the
quickstart's setting). The last column is the skin mask of the row's last face: occluders leave it.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from data_pipelines import synthetic  # noqa: E402
from data_pipelines.detector_framing import load_calibration  # noqa: E402
from msma_jax import camera as cam  # noqa: E402
from msma_jax.face_model import load_face_model  # noqa: E402

ROWS = [
    ("plain (simple backgrounds)", {}),
    ("backgrounds='natural'", {"backgrounds": "natural"}),
    ("head=True", {"backgrounds": "natural", "head": True}),
    ("occluder_prob=1", {"occluder_prob": 1.0}),
    ("camera_artefacts=True", {"camera_artefacts": True}),
    ("light_scale=2", {"light_scale": 2.0}),
    ("framing='detector'", {"framing": "detector"}),
    ("all (quickstart)", {"backgrounds": "mixed", "head": True, "occluder_prob": 0.3,
                          "camera_artefacts": True, "light_scale": 1.5, "framing": "detector"}),
]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "synthetic_photo_like.png"))
  ap.add_argument("--size", type=int, default=160, help="tile side in pixels")
  ap.add_argument("--faces", type=int, default=6)
  args = ap.parse_args(argv)
  fm = load_face_model("embedded")
  camera = cam.Camera.for_face_model(fm, args.size)
  noise = load_calibration("embedded")
  label_w = 230
  rows = []
  for label, kw in ROWS:
    options = synthetic.SyntheticOptions(max_yaw_deg=45, max_pitch_deg=15, max_roll_deg=15, **kw)
    _, images, masks, lm = synthetic.make_faces(fm, np.random.default_rng(3), args.faces, camera,
                                                options, noise)
    tiles = [np.round(im * 255).astype(np.uint8) for im in images]
    mask = np.repeat(np.round(masks[-1] * 255).astype(np.uint8)[..., None], 3, -1)
    head = np.full((args.size, label_w, 3), 255, np.uint8)
    cv2.putText(head, label, (6, args.size // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)
    rows.append(np.concatenate([head, *tiles, mask], 1))
  sheet = np.concatenate(rows, 0)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  cv2.imwrite(str(out), sheet[..., ::-1])
  print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
