"""Face detection on hard cases: recall, false positives and time per detector.

    python benchmarks/bench_detect.py --dlib-faces DIR [--deep3d-examples DIR] [--profiles N]
        [--detectors hog-rgb,hog,cnn,cascade] [--min-score 0.3]

The hard-case set is made from photos available offline (none are in this repository):

- dlib's `examples/faces/` (PASCAL VOC group photos; the hand-drawn face boxes of its
  `training.xml` / `testing.xml` are the truth; `dogs.jpg` has no people and is a negative),
- Deep3DFaceRecon_pytorch's `datasets/examples/` (one face each; truth box from its 5-point
  detections in `detections/`, framed as dlib frames a face: `detection.box_from_points`),
- scikit-image's astronaut and matplotlib's Grace Hopper (truth: HOG's box on the original),
- photo-like synthetic profiles (yaw 45-75 deg, known landmarks: `data_pipelines.synthetic`),
- negatives without faces: dogs.jpg, scikit-image's coffee, chelsea (a cat) and rocket.

Each photo is used as it is and as greyscale, rotated by 35 deg (on a larger canvas), shrunk so
its faces are ~36 px wide, and darkened (x0.3, gamma 1.6, noise). A true face is found when a
detection's centre lies inside its truth box and the two widths are within a factor 2; other
detections are false positives. "colour = grey": the share of colour photos whose detections on
the greyscale copy are the same boxes (IoU > 0.9). Detectors: `hog-rgb` (the former default: HOG
on the RGB picture, upsample 0, then 1 when nothing is found), `hog` (the same on the luma),
`cnn` (upsample 1, at most 800 px), `cascade` (`FaceDetector("cascade")`, reconstruct's default).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time
import xml.etree.ElementTree as ET

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data_pipelines.detection import FaceDetector, box_from_points, grey_rgb  # noqa: E402
from data_pipelines.images import read_image  # noqa: E402

KINDS = ("original", "grey", "rotated", "small", "dark", "profile")


# ---- the set ---------------------------------------------------------------------------------------
def _dlib_photos(folder: pathlib.Path):
  """(name, image, truth boxes [N, 4]) of dlib's examples with hand boxes; dogs.jpg as negative."""
  boxes: dict[str, list] = {}
  for xml in ("training.xml", "testing.xml"):
    path = folder / xml
    if not path.is_file():
      continue
    for im in ET.parse(path).getroot().iter("image"):
      for b in im.iter("box"):
        x0, y0 = float(b.get("left")), float(b.get("top"))
        boxes.setdefault(im.get("file"), []).append(
            (x0, y0, x0 + float(b.get("width")), y0 + float(b.get("height"))))
  out = [(f"dlib/{f}", read_image(folder / f), np.array(b)) for f, b in sorted(boxes.items())]
  negatives = [("dlib/dogs.jpg", read_image(folder / "dogs.jpg"))] if (folder / "dogs.jpg").is_file() else []
  return out, negatives


def _deep3d_photos(folder: pathlib.Path):
  out = []
  for p in sorted(folder.iterdir()):
    det = folder / "detections" / (p.stem + ".txt")
    if p.suffix.lower() in (".jpg", ".png") and det.is_file():
      points = np.loadtxt(det).reshape(5, 2) + 0.5     # its pixel centres are integers
      out.append((f"deep3d/{p.name}", read_image(p), np.array([box_from_points(points)])))
  return out


def _packaged_photos(hog: FaceDetector):
  import matplotlib.cbook
  from skimage import data
  with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
    grace = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy()
  out = []
  for name, img in (("astronaut", data.astronaut()), ("grace_hopper", grace)):
    hog.upsample = 1
    out.append((name, img, np.array([hog.detect(img)[0].box])))
  negatives = [(n, getattr(data, n)()) for n in ("coffee", "chelsea", "rocket")]
  return out, negatives


def _profiles(n: int, seed: int = 0):
  """Photo-like synthetic faces at yaw 45-75 deg: a 224 px render (natural background, camera
  artefacts) pasted in the middle of a 384 px generated scene; truth box from the landmarks."""
  from data_pipelines import photo_like, synthetic
  from msma_jax import camera as cam
  from msma_jax.face_model import load_face_model
  fm = load_face_model("embedded")
  camera = cam.Camera.for_face_model(fm, 224)
  rng = np.random.default_rng(seed)
  opts = synthetic.SyntheticOptions(max_yaw_deg=75.0, backgrounds="natural",
                                    camera_artefacts=True)
  out = []
  while len(out) < n:
    flat, images, _, landmarks = synthetic.make_faces(fm, rng, 16, camera, opts)
    yaw = np.degrees(flat[:, fm.sizes.slices()["angle"]][:, 1])
    scenes = photo_like.natural_backgrounds(rng, 16, 384)
    for i in np.nonzero(np.abs(yaw) >= 45)[0]:
      scenes[i, 80:304, 80:304] = images[i]
      images_i, lm = scenes[i], landmarks[i] + 80
      lo, hi = lm.min(0), lm.max(0)
      c, half = (lo + hi) / 2, 0.55 * max(hi - lo)
      out.append((f"profile/yaw{yaw[i]:+.0f}_{len(out)}", np.round(images_i * 255).astype(np.uint8),
                  np.array([[c[0] - half, c[1] - half, c[0] + half, c[1] + half]])))
  return out[:n]


def _rotate(img, boxes, degrees):
  h, w = img.shape[:2]
  m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
  cos, sin = abs(m[0, 0]), abs(m[0, 1])
  nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
  m[0, 2] += nw / 2 - w / 2
  m[1, 2] += nh / 2 - h / 2
  out = cv2.warpAffine(img, m, (nw, nh), borderMode=cv2.BORDER_REFLECT)
  c = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)
  c = c @ m[:, :2].T + m[:, 2]
  half = (boxes[:, 2] - boxes[:, 0]) / 2
  return out, np.stack([c[:, 0] - half, c[:, 1] - half, c[:, 0] + half, c[:, 1] + half], -1)


def _variants(name, img, boxes, rng):
  """(kind, name, image, truth) for one colour photo."""
  yield "original", name, img, boxes
  yield "grey", name, grey_rgb(img), boxes
  yield ("rotated", name, *_rotate(img, boxes, 35.0))
  f = min(1.0, 36.0 / float(np.median(boxes[:, 2] - boxes[:, 0])))
  if f < 0.9:
    small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    yield "small", name, small, boxes * (small.shape[1] / img.shape[1])
  dark = 255.0 * (0.3 * (img / 255.0) ** 1.6) + rng.normal(0, 3, img.shape)
  yield "dark", name, np.clip(dark, 0, 255).astype(np.uint8), boxes


# ---- detectors -------------------------------------------------------------------------------------
class _HogRGB:
  """The former default: HOG on the RGB picture, upsample 0, then 1 when nothing is found."""

  def __init__(self, min_score):
    import dlib
    self.det, self.min_score = dlib.get_frontal_face_detector(), min_score

  def detect(self, img):
    for up in (0, 1):
      rects, scores, _ = self.det.run(np.ascontiguousarray(img), up, -1.0)
      boxes = [(r.left(), r.top(), r.right() + 1, r.bottom() + 1)
               for r, s in zip(rects, scores) if s >= self.min_score]
      if boxes:
        return boxes
    return []


class _Auto:
  def __init__(self, kind, min_score, **kw):
    self.det = FaceDetector(kind, min_score=min_score, **kw)

  def detect(self, img):
    found = self.det.detect(img)
    if not found and self.det.kind == "hog":
      self.det.upsample = 1
      found = self.det.detect(img)
      self.det.upsample = 0
    return [d.box for d in found]


def make_detector(name, min_score):
  if name == "hog-rgb":
    return _HogRGB(min_score)
  if name == "hog":
    return _Auto("hog", min_score, upsample=0)
  if name == "cnn":
    return _Auto("cnn", min_score, upsample=1, max_side=800)
  if name == "cascade":
    return _Auto("cascade", min_score, upsample=0)
  raise SystemExit(f"unknown detector {name!r} (hog-rgb, hog, cnn, cascade)")


def _match(found, truth):
  """-> (true faces found, false positives)."""
  used, hits = set(), 0
  for t in truth:
    tw = t[2] - t[0]
    for j, d in enumerate(found):
      cx, cy, dw = (d[0] + d[2]) / 2, (d[1] + d[3]) / 2, d[2] - d[0]
      if (j not in used and t[0] <= cx <= t[2] and t[1] <= cy <= t[3]
          and 0.5 <= dw / tw <= 2.0):
        used.add(j)
        hits += 1
        break
  return hits, len(found) - len(used)


def _same(a, b):
  def iou(p, q):
    x0, y0, x1, y1 = max(p[0], q[0]), max(p[1], q[1]), min(p[2], q[2]), min(p[3], q[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)
  return len(a) == len(b) and all(max((iou(p, q) for q in b), default=0) > 0.9 for p in a)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  ap.add_argument("--dlib-faces", help="dlib's examples/faces folder (photos + training.xml/testing.xml)")
  ap.add_argument("--deep3d-examples", help="Deep3DFaceRecon_pytorch's datasets/examples folder")
  ap.add_argument("--profiles", type=int, default=24, help="synthetic profile faces")
  ap.add_argument("--detectors", default="hog-rgb,hog,cnn,cascade")
  ap.add_argument("--min-score", type=float, default=0.3, help="as reconstruct's default")
  args = ap.parse_args(argv)
  for folder in (args.dlib_faces, args.deep3d_examples):
    if folder and not pathlib.Path(folder).is_dir():
      ap.error(f"{folder}: not a folder")

  rng = np.random.default_rng(0)
  photos, negatives = _packaged_photos(FaceDetector("hog", upsample=1))
  if args.dlib_faces:
    more, neg = _dlib_photos(pathlib.Path(args.dlib_faces))
    photos, negatives = photos + more, negatives + neg
  if args.deep3d_examples:
    photos += _deep3d_photos(pathlib.Path(args.deep3d_examples))
  cases = [c for name, img, boxes in photos for c in _variants(name, img, boxes, rng)]
  cases += [("profile", name, img, boxes) for name, img, boxes in _profiles(args.profiles)]
  print(f"{len(photos)} photos ({sum(len(b) for _, _, b in photos)} faces), {len(cases)} cases, "
        f"{len(negatives)} negatives", file=sys.stderr)

  rows = []
  for name in args.detectors.split(","):
    det = make_detector(name, args.min_score)
    det.detect(photos[0][1])                       # load models before timing
    hits = {k: [0, 0] for k in KINDS}
    fp, seconds, found_of = 0, 0.0, {}
    for kind, label, img, truth in tqdm(cases, desc=name, leave=False):
      t = time.perf_counter()
      found = det.detect(img)
      seconds += time.perf_counter() - t
      h, f = _match(found, truth)
      hits[kind][0] += h
      hits[kind][1] += len(truth)
      fp += f
      if kind in ("original", "grey"):
        found_of[(kind, label)] = found
    neg_fp = sum(len(det.detect(img)) for _, img in negatives)
    agree = np.mean([_same(found_of[("original", l)], found_of[("grey", l)])
                     for k, l, _img, _t in cases if k == "original"]) if photos else float("nan")
    all_hits = sum(v[0] for v in hits.values()), sum(v[1] for v in hits.values())
    rows.append([name] + [f"{hits[k][0] / hits[k][1]:.2f}" if hits[k][1] else "-" for k in KINDS]
                + [f"{all_hits[0] / all_hits[1]:.3f}", f"{fp / len(cases):.2f}", str(neg_fp),
                   f"{agree:.2f}", f"{1000 * seconds / len(cases):.0f}"])
  head = ["detector", *KINDS, "recall, all", "false pos. / image", "false pos. on negatives",
          "colour = grey", "ms / image"]
  counts = {k: sum(len(t) for kk, _, _, t in cases if kk == k) for k in KINDS}
  print(f"\nfaces per kind: {counts}; {len(negatives)} negative images; min score "
        f"{args.min_score}; {platform.node()}, {os.cpu_count()} CPUs\n")
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  for r in rows:
    print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
  main()
