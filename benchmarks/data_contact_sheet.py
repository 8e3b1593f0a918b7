"""Makes the README's data contact sheet: `msma-jax prepare-data` on photos in awkward forms.

    python benchmarks/data_contact_sheet.py [--out docs/images/data_contact_sheet.png]

The photos are variants of scikit-image's astronaut (the one real face photo a package ships):
rotated and scaled, mirrored, greyscale, CMYK JPEG, EXIF-rotated, colour-shifted, two faces in one
photo, and a 8000x6000 photo; plus a truncated JPEG and a cat photo, which are skipped and counted.
"""
from __future__ import annotations

import argparse
import io
import pathlib
import sys
import tempfile

import cv2
import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_photos(folder: pathlib.Path) -> None:
  from skimage import data

  from data_pipelines.alignment import warp_affine
  folder.mkdir(parents=True, exist_ok=True)
  img = data.astronaut()
  pil = Image.fromarray(img)
  a = np.radians(18)
  m = 0.8 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  warped = warp_affine(img, np.concatenate([m, (np.array([250, 200]) - m @ [220, 120])[:, None]], 1),
                       (400, 500))
  Image.fromarray(warped).save(folder / "01_rotated.jpg", quality=92)
  Image.fromarray(np.ascontiguousarray(img[:, ::-1])).save(folder / "02_mirrored.png")
  pil.convert("L").save(folder / "03_grey.jpg", quality=92)
  pil.convert("CMYK").save(folder / "04_cmyk.jpg", quality=92)
  exif = Image.Exif()
  exif[0x0112] = 6
  pil.transpose(Image.Transpose.ROTATE_90).save(folder / "05_exif_rotated.jpg", exif=exif, quality=92)
  shifted = np.clip(img.astype(np.float32) * [0.8, 0.9, 1.25] * 0.8, 0, 255).astype(np.uint8)
  Image.fromarray(shifted).save(folder / "06_cool_dim.webp", quality=90)
  two = np.full((300, 560, 3), 230, np.uint8)
  head = img[:260, 100:360]
  two[20:280, 10:270] = head
  two[70:250, 340:520] = cv2.resize(np.ascontiguousarray(head[:, ::-1]), (180, 180),
                                    interpolation=cv2.INTER_AREA)
  Image.fromarray(two).save(folder / "07_two_faces.png")
  big = np.zeros((6000, 8000, 3), np.uint8)
  big[1500:4500, 2500:5500] = cv2.resize(img, (3000, 3000), interpolation=cv2.INTER_CUBIC)
  Image.fromarray(big).save(folder / "08_8000x6000.jpg", quality=85)
  buf = io.BytesIO()
  pil.save(buf, "JPEG")
  (folder / "09_truncated.jpg").write_bytes(buf.getvalue()[:5000])
  Image.fromarray(data.chelsea()).save(folder / "10_cat.jpg")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default=str(ROOT / "docs/images/data_contact_sheet.png"))
  args = ap.parse_args(argv)
  from msma_jax.cli import main as cli
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    write_photos(tmp / "photos")
    return cli(["prepare-data", str(tmp / "photos"), "--out", str(tmp / "data"),
                "--contact-sheet", args.out, "--sheet-count", "8", "--sheet-columns", "4",
                "--no-progress"])


if __name__ == "__main__":
  sys.exit(main())
