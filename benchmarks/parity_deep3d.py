"""msma-jax against Deep3DFaceRecon's own code: every shared quantity, as a table of differences.

    python benchmarks/parity_deep3d.py --deep3d-repo PATH/Deep3DFaceRecon_pytorch [--bfm-folder BFM]

PATH is a checkout of sicxu/Deep3DFaceRecon_pytorch (not part of this repository; nothing of it is
copied). Its `models/bfm.py` (ParametricFaceModel), `models/losses.py` and `util/preprocess.py`
(align_img) are imported and run on the CPU beside msma-jax, on random coefficients:

* face model: albedo, posed vertices (camera frame), projected landmarks (Deep3D's y up: y' = 224 -
  y), vertex normals (rotated), shaded vertex colours;
* losses: photometric, landmark, coefficient and gamma regularisation, reflectance;
* alignment: the 224-px crops of the repository's example photos (datasets/examples with their
  5-point detections), through `align_img` and `--align deep3d`, and the crop landmarks.

--bfm-folder: a folder with BFM_model_front.mat and similarity_Lm3D_all.mat (the real, licensed
model). Without it, a generated BFM_model_front.mat (a bumpy grid with a real point_buf) and the
checkout's BFM/similarity_Lm3D_all.mat are used. Deep3DFaceRecon's perceptual loss needs kornia;
when kornia is missing a placeholder module lets losses.py import (the perceptual loss is not
compared).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import types

import numpy as np
import scipy.io

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import jax.numpy as jnp  # noqa: E402
from PIL import Image  # noqa: E402

from data_pipelines.alignment import warp_to_crop  # noqa: E402
from data_pipelines.deep3d_alignment import Deep3DAligner  # noqa: E402
from data_pipelines.landmarks import read_landmark_file  # noqa: E402
from msma_jax import camera as cam  # noqa: E402
from msma_jax import lighting, losses  # noqa: E402
from msma_jax.face_model import Coefficients, load_face_model  # noqa: E402


def _import_deep3d(repo: pathlib.Path):
  try:
    import kornia  # noqa: F401
  except ImportError:               # only its perceptual loss needs kornia.geometry.warp_affine
    geometry = types.ModuleType("kornia.geometry")
    geometry.warp_affine = None
    sys.modules["kornia"] = types.ModuleType("kornia")
    sys.modules["kornia.geometry"] = geometry
  if not hasattr(np, "VisibleDeprecationWarning"):   # its preprocess.py predates NumPy 2
    np.VisibleDeprecationWarning = np.exceptions.VisibleDeprecationWarning
  sys.path.insert(0, str(repo))
  import importlib.util

  def load(name, rel):
    spec = importlib.util.spec_from_file_location(name, repo / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
  # by file: the packages' __init__ pull in training machinery this comparison does not need
  sys.modules.setdefault("util", types.ModuleType("util"))
  sys.modules["util.load_mats"] = load("util.load_mats", "util/load_mats.py")
  preprocess = load("d3d_preprocess", "util/preprocess.py")
  # NumPy 2 refuses float() of its [1]-shaped translations: hand them over as scalars (same values)
  pos = preprocess.POS
  preprocess.POS = lambda xp, x: (lambda t, s: (t.reshape(-1), s))(*pos(xp, x))
  return load("d3d_bfm", "models/bfm.py"), load("d3d_losses", "models/losses.py"), preprocess


def _generated_bfm(folder: pathlib.Path, repo: pathlib.Path) -> pathlib.Path:
  from bfm_fixtures import bfm_front_dict
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  d = bfm_front_dict(rng, n=40)
  # smooth bases (low-frequency fields, as a face model's are): the fixture's per-vertex noise
  # folds the grid, where any two normal definitions part by float rounding alone
  xy = d["meanshape"].reshape(-1, 3)[:, :2]
  for key, k in (("idBase", 80), ("exBase", 64)):
    freq = rng.uniform(0.5, 3.0, (k, 3, 2))
    phase = rng.uniform(0, 2 * np.pi, (k, 3))
    amp = rng.normal(0, 0.01, (k, 3)) * np.array([0.3, 0.3, 1.0])
    field = amp[None] * np.sin(np.einsum("vd,kcd->vkc", xy, freq) + phase[None])   # [V, K, 3]
    d[key] = np.moveaxis(field, 1, 2).reshape(-1, k).astype(np.float32)
  scipy.io.savemat(str(folder / "BFM_model_front.mat"), d)
  (folder / "similarity_Lm3D_all.mat").write_bytes(
      (repo / "BFM" / "similarity_Lm3D_all.mat").read_bytes())
  return folder


def _row(rows: dict, name, ours, theirs, note=""):
  """Keeps the largest difference over the draws per quantity."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  scale = max(float(np.abs(theirs).max()), 1e-30)
  diff = float(np.abs(ours - theirs).max())
  old = rows.get(name, (0.0, 0.0, note))
  rows[name] = (max(old[0], diff), max(old[1], diff / scale), note)


def compare_model(rows, bfm, d3d_losses, folder, draws, seed):
  import torch
  fm = load_face_model(folder / "BFM_model_front.mat")
  pfm = bfm.ParametricFaceModel(bfm_folder=str(folder), is_train=True)
  pfm.to("cpu")
  rng = np.random.default_rng(seed)
  for _ in range(draws):
    b = 4
    flat = np.concatenate([rng.normal(0, 1, (b, 80)), rng.normal(0, 1, (b, 64)),
                           rng.normal(0, 1, (b, 80)), rng.uniform(-0.5, 0.5, (b, 3)),
                           rng.normal(0, 0.2, (b, 27)),
                           np.concatenate([rng.normal(0, 0.2, (b, 2)), rng.normal(0, 0.5, (b, 1))],
                                          1)], 1).astype(np.float32)
    vtx, tex, colour, lm = (t.numpy() for t in pfm.compute_for_render(torch.from_numpy(flat)))
    c = Coefficients.from_flat(jnp.asarray(flat), fm.sizes)
    shape, albedo = fm.decode(c)
    world = cam.rigid_transform(shape, c.angle, c.trans)
    normals = fm.vertex_normals(world)
    shaded = lighting.shade(albedo, normals, c.gamma)
    camera = cam.Camera.for_face_model(fm, 224)
    proj = np.asarray(cam.project(world, camera))
    ours_lm = np.asarray(proj)[:, np.asarray(fm.landmark_indices)]        # y down
    flip = lambda p: np.stack([p[..., 0], 224 - p[..., 1]], -1)  # noqa: E731  Deep3D's y up
    their_norm = (pfm.compute_norm(pfm.compute_shape(torch.from_numpy(flat[:, :80]),
                                                     torch.from_numpy(flat[:, 80:144])))
                  @ pfm.compute_rotation(torch.from_numpy(flat[:, 224:227]))).numpy()
    w = np.asarray(world)
    tag = ""
    _row(rows, "albedo" + tag, albedo, tex)
    _row(rows, "posed vertices" + tag, np.stack([w[..., 0], w[..., 1], 10 - w[..., 2]], -1), vtx)
    _row(rows, "landmarks (px)" + tag, flip(ours_lm), lm)
    _row(rows, "vertex normals" + tag, normals, their_norm)
    _row(rows, "shaded colours" + tag, shaded, colour)
    area = np.asarray(lighting.vertex_normals(world, fm.triangles))
    _row(rows, "vertex normals, area-weighted instead", area, their_norm,
         "--normals area (msma-jax's former definition)")
    # losses on random images / landmarks with Deep3D's own functions
    img_a, img_b = rng.uniform(0, 1, (2, b, 224, 224, 3)).astype(np.float32)
    mask = (rng.uniform(size=(b, 224, 224)) > 0.4).astype(np.float32)
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x))  # noqa: E731
    _row(rows, "photometric loss" + tag,
         losses.photometric_loss(jnp.asarray(img_a), jnp.asarray(img_b), jnp.asarray(mask)),
         d3d_losses.photo_loss(t(img_a).permute(0, 3, 1, 2), t(img_b).permute(0, 3, 1, 2),
                               t(mask)[:, None]).numpy())
    target = lm + rng.normal(0, 2, lm.shape).astype(np.float32)
    ours_target = flip(target)
    _row(rows, "landmark loss" + tag, losses.landmark_loss(jnp.asarray(ours_lm, jnp.float32),
                                                          jnp.asarray(ours_target, jnp.float32)),
         d3d_losses.landmark_loss(t(lm), t(target)).numpy())
    coeff_dict = pfm.split_coeff(t(flat))
    creg, greg = d3d_losses.reg_loss(coeff_dict, types.SimpleNamespace(w_id=1.0, w_exp=0.8,
                                                                        w_tex=1.7e-2))
    _row(rows, "coefficient regularisation" + tag, losses.coefficient_regularization(c),
         creg.numpy())
    _row(rows, "gamma regularisation" + tag, losses.gamma_regularization(c.gamma), greg.numpy())
    _row(rows, "reflectance loss" + tag, losses.reflectance_loss(albedo, fm.skin_mask),
         d3d_losses.reflectance_loss(t(tex), t(np.asarray(pfm.skin_mask, np.float32))).numpy())


def compare_alignment(rows, preprocess, folder, examples: pathlib.Path):
  aligner = Deep3DAligner(folder)
  lm3d = scipy.io.loadmat(str(folder / "similarity_Lm3D_all.mat"))["lm"]
  idx = np.array([31, 37, 40, 43, 46, 49, 55]) - 1
  lm3d = np.stack([lm3d[idx[0]], lm3d[idx[[1, 2]]].mean(0), lm3d[idx[[3, 4]]].mean(0),
                   lm3d[idx[5]], lm3d[idx[6]]])[[1, 2, 0, 3, 4]]
  crop_max, crop_frac, lm_max, n = 0, 0.0, 0.0, 0
  for photo in sorted(examples.glob("*.*g")):
    det = examples / "detections" / f"{photo.stem}.txt"
    if not det.exists():
      continue
    im = Image.open(photo).convert("RGB")
    h0 = im.size[1]
    raw = np.loadtxt(det).astype(np.float32).reshape(-1, 2)
    lm = raw.copy()
    lm[:, -1] = h0 - 1 - lm[:, -1]
    _, their_crop, their_lm, _ = preprocess.align_img(im, lm, lm3d)
    points = read_landmark_file(det)[0]          # project convention (+0.5)
    image = np.asarray(im)
    t = aligner.fit(points, image.shape[:2])
    ours = warp_to_crop(image, t)
    diff = np.abs(ours.astype(int) - np.asarray(their_crop).astype(int))
    crop_max = max(crop_max, int(diff.max()))
    crop_frac = max(crop_frac, float((diff > 0).mean()))
    our_lm = t.to_crop(points)
    their_pos = np.stack([their_lm[:, 0] + 0.5, 224 - 1 - their_lm[:, 1] + 0.5], 1)
    lm_max = max(lm_max, float(np.abs(our_lm - their_pos).max()))
    n += 1
  # Why the window is resampled in two passes: one resize with a two-sided box does not always
  # give the whole-photo resize's values (Pillow 13: e.g. this noise image, window, scale).
  from PIL import Image as _Image
  noise = _Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), np.uint8))
  w, h, (x0, y0, x1, y1) = 400, 461, (3, 34, 227, 258)
  whole = np.asarray(noise.resize((w, h), _Image.Resampling.BICUBIC))[y0:y1, x0:x1]
  one_box = np.asarray(noise.resize((x1 - x0, y1 - y0), _Image.Resampling.BICUBIC,
                                    box=(x0 * 260 / w, y0 * 300 / h, x1 * 260 / w, y1 * 300 / h)))
  d1 = np.abs(whole.astype(int) - one_box.astype(int))
  rows["a 224² window by one PIL resize with a two-sided box (noise image; levels)"] = (
      float(d1.max()), float((d1 > 0).mean()), "relative column: share of differing values; why "
      "msma-jax resamples in two passes")
  rows[f"crop pixels, {n} example photos (levels of 255)"] = (
      float(crop_max), crop_frac, "relative column: largest share of differing values in a crop")
  rows["crop landmarks vs align_img's lm_new (px)"] = (
      lm_max, float("nan"), "its formula leaves out its own int() roundings")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("--deep3d-repo", required=True, type=pathlib.Path,
                 help="a checkout of sicxu/Deep3DFaceRecon_pytorch")
  p.add_argument("--bfm-folder", type=pathlib.Path,
                 help="BFM_model_front.mat + similarity_Lm3D_all.mat (default: generated model)")
  p.add_argument("--draws", type=int, default=3, help="random coefficient batches (4 faces each)")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  repo = args.deep3d_repo.expanduser()
  if not (repo / "models" / "bfm.py").is_file():
    print(f"parity_deep3d: error: {repo}: not a Deep3DFaceRecon_pytorch checkout "
          "(no models/bfm.py)", file=sys.stderr)
    return 2
  bfm, d3d_losses, preprocess = _import_deep3d(repo)
  with tempfile.TemporaryDirectory() as tmp:
    folder = args.bfm_folder or _generated_bfm(pathlib.Path(tmp) / "BFM", repo)
    rows: dict = {}
    compare_model(rows, bfm, d3d_losses, folder, args.draws, args.seed)
    compare_alignment(rows, preprocess, folder, repo / "datasets" / "examples")
  print(f"face model: {'generated grid (40x40, smooth bases)' if args.bfm_folder is None else args.bfm_folder}")
  print(f"{args.draws} draws of 4 faces (seed {args.seed}); the largest difference over them")
  print("| quantity | max abs difference | relative to max abs value | note |")
  print("| --- | ---: | ---: | --- |")
  for name, (diff, rel, note) in rows.items():
    print(f"| {name} | {diff:.3g} | {rel:.3g} | {note} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
