#!/usr/bin/env python
"""Builds msma_jax/assets/embedded_face_model.npz from the Surrey Face Model (SFM) release files.

Run once by a maintainer; the output is committed and the package never reads the source files at
run time:

    pip install eos-py
    python scripts/build_embedded_face_model.py --sfm-dir ../shared/assets/sfm

What it derives, and why (the same facts are in msma_jax/assets/LICENSE-SFM.md and the README):

* shape: the 3448-vertex SFM mean (mm), re-centred on the vertex centroid so rotations act about the
  middle of the head (Deep3DFaceRecon re-centres BFM the same way); 63 identity components already
  scaled by sqrt(eigenvalue) ("rescaled PCA basis"), so identity coefficients are N(0, 1).
* expression: the 6 SFM blendshapes (anger, disgust, fear, happiness, sadness, surprise), as offsets;
  coefficient 1 is the full expression.
* triangles: checked to be consistently oriented (each interior edge used once in each direction) and
  outward-facing (CCW seen from the front); flipped if a future source were not.
* symmetry: the minimum-cost perfect matching between the mean and its mirror image (x -> -x). It is an
  involution, agrees with the SFM reference symmetry on the 845 base vertices and maps triangles onto
  triangles; the build asserts all three.
* 68 landmarks (iBUG order, 0-based): the 50 points of ibug_to_sfm.txt; the 16 jaw points and the two
  inner mouth corners are not in that file and are chosen here:
    - jaw: along the right face contour of sfm_model_contours.json, from the contour vertex level with
      the outer eye corner (iBUG 37) down to the chin (iBUG 9), 8 points at equal arc length in the
      frontal (x, y) projection, each snapped to the nearest contour vertex; the left side is the mirror
      image through the symmetry map (so the mapping is exactly symmetric).
    - inner mouth corners (iBUG 61/65): the vertex nearest the point 15 % of the way from the outer mouth
      corner (iBUG 49) to the middle of the inner lips (iBUG 63/67); the left one is the mirror image.
* regions: smooth weights (Gaussian fall-off of the distance to landmark polylines) for lips, brows,
  eye region, cheeks and nose; `face_mask` = vertices within 95 mm of the nose tip (the MICC crop
  radius); `skin_mask` = face_mask weighted down on lips, brows and eyes.
* contour candidates (`contour_candidates` [17, K]): per jaw landmark a band of vertices across the
  cheek for the silhouette-following jaw points (`msma_jax.contour`, scripts/add_contour_candidates.py).
* albedo (procedural; the SFM has no colour model): a mean skin tone with darker brows and redder
  lips, plus 8 basis vectors (brightness, warmth, olive, lips, brows, eye region, cheek/nose redness,
  vertical gradient) scaled so that coefficients ~ N(0, 1) give plausible skin. Linear RGB in [0, 1].
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from add_contour_candidates import with_contour_candidates  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "msma_jax" / "assets" / "embedded_face_model.npz"

EXPRESSION_NAMES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
ALBEDO_BASIS_NAMES = ("brightness", "warmth", "olive", "lips", "brows", "eye_region",
                      "cheek_nose_redness", "vertical_gradient")


def read_ibug_mapping(path: pathlib.Path) -> dict[int, int]:
  """iBUG 1-based point number -> SFM vertex (0-based), from the TOML [landmark_mappings] table."""
  text = path.read_text().split("[contour_landmarks]")[0]
  mapping = {}
  for line in text.splitlines():
    m = re.match(r"\s*(\d+)\s*=\s*(\d+)", line)
    if m:
      mapping[int(m.group(1))] = int(m.group(2))
  return mapping


def symmetry_map(mean: np.ndarray) -> np.ndarray:
  """[V] int: mirror vertex of every vertex (min-cost matching of the mean against its mirror)."""
  cost = cdist(mean, mean * np.array([-1.0, 1.0, 1.0]))
  _, sym = linear_sum_assignment(cost)
  return sym


def orient_triangles(tri: np.ndarray, mean: np.ndarray) -> np.ndarray:
  """Checks consistent orientation through half-edges and makes front faces CCW (normals toward +z)."""
  half_edges = {}
  for t in tri:
    for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
      assert (a, b) not in half_edges, f"half-edge {(a, b)} used twice: inconsistent orientation"
      half_edges[(a, b)] = True
  n = np.cross(mean[tri[:, 1]] - mean[tri[:, 0]], mean[tri[:, 2]] - mean[tri[:, 0]])
  if (n[:, 2] > 0).mean() < 0.5:
    tri = tri[:, [0, 2, 1]]
  return tri


def polyline_distance(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
  """[N] Euclidean distance from each point to a 3D polyline [M, 3] (segments between rows)."""
  a, b = polyline[:-1], polyline[1:]
  ab = b - a
  t = np.einsum("nmc,mc->nm", points[:, None] - a[None], ab) / np.maximum((ab * ab).sum(-1), 1e-12)
  t = np.clip(t, 0.0, 1.0)
  closest = a[None] + t[..., None] * ab[None]
  return np.linalg.norm(points[:, None] - closest, axis=-1).min(axis=1)


def jaw_landmarks(mean, contour, start_y, chin):
  """8 contour vertices from the point level with `start_y` down to the chin, equal (x, y) arc length."""
  chain_y = mean[contour, 1]
  start = int(np.argmin(np.abs(chain_y - start_y)))
  chain = list(contour[start:]) + [chin]
  xy = mean[chain, :2]
  seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
  arc = np.concatenate([[0.0], np.cumsum(seg)])
  chosen = []
  for k in range(8):
    target = arc[-1] * k / 8.0
    chosen.append(chain[int(np.argmin(np.abs(arc[:-1] - target)))])
  assert len(set(chosen)) == 8, chosen
  return chosen


def gaussian_weight(dist: np.ndarray, sigma: float) -> np.ndarray:
  return np.exp(-0.5 * (dist / sigma) ** 2)


def build(sfm_dir: pathlib.Path) -> dict[str, np.ndarray]:
  import eos  # only the build script needs eos-py

  model = eos.morphablemodel.load_model(str(sfm_dir / "sfm_shape_3448.bin"))
  shape = model.get_shape_model()
  mean = np.asarray(shape.get_mean(), np.float64).reshape(-1, 3)
  n_vertices = mean.shape[0]
  id_basis = np.asarray(shape.get_rescaled_pca_basis(), np.float64).reshape(n_vertices, 3, -1)
  eigenvalues = np.asarray(shape.get_eigenvalues(), np.float64)
  np.testing.assert_allclose(np.linalg.norm(id_basis.reshape(-1, id_basis.shape[-1]), axis=0),
                             np.sqrt(eigenvalues), rtol=1e-4)
  blendshapes = eos.morphablemodel.load_blendshapes(str(sfm_dir / "expression_blendshapes_3448.bin"))
  assert tuple(b.name for b in blendshapes) == EXPRESSION_NAMES
  exp_basis = np.stack([np.asarray(b.deformation, np.float64).reshape(n_vertices, 3)
                        for b in blendshapes], axis=-1)
  uv = np.asarray(model.get_texture_coordinates(), np.float64)
  tri = orient_triangles(np.asarray(shape.get_triangle_list(), np.int64), mean)

  centre = mean.mean(axis=0)
  mean = mean - centre

  sym = symmetry_map(mean)
  assert np.array_equal(sym[sym], np.arange(n_vertices)), "symmetry is not an involution"
  ref_lines = (sfm_dir / "sfm_reference_symmetry.txt").read_text().split("\n")
  ref = np.array([int(l.split()[0]) for l in ref_lines if l.strip()]) - 1
  assert np.array_equal(sym[: len(ref)], ref), "symmetry disagrees with the SFM reference symmetry"
  tri_set = {tuple(sorted(t)) for t in tri}
  assert all(tuple(sorted(sym[t])) in tri_set for t in tri), "symmetry does not map triangles"

  mapping = read_ibug_mapping(sfm_dir / "ibug_to_sfm.txt")
  contours = json.loads((sfm_dir / "sfm_model_contours.json").read_text())["model_contour"]
  right_contour = np.asarray(contours["right_contour"])
  jaw_right = jaw_landmarks(mean, right_contour, start_y=mean[mapping[37], 1], chin=mapping[9])
  for k, v in enumerate(jaw_right):  # iBUG 1..8 (subject's right), mirrored to 17..10
    mapping[1 + k] = v
    mapping[17 - k] = int(sym[v])
  inner_mid = 0.5 * (mean[mapping[63]] + mean[mapping[67]])
  target = mean[mapping[49]] + 0.15 * (inner_mid - mean[mapping[49]])
  inner_right = int(np.argmin(np.linalg.norm(mean - target, axis=1)))
  mapping[61], mapping[65] = inner_right, int(sym[inner_right])
  landmarks = np.array([mapping[k] for k in range(1, 69)], np.int64)

  # Regions: Gaussian fall-off (mm) around landmark polylines of the mean shape.
  lm = mean[landmarks]
  def region(polylines, sigma):
    d = np.min([polyline_distance(mean, lm[list(p)]) for p in polylines], axis=0)
    return gaussian_weight(d, sigma)
  lips = region([list(range(48, 60)) + [48], list(range(60, 68)) + [60]], 3.0)
  brows = region([range(17, 22), range(22, 27)], 3.5)
  eyes = region([list(range(36, 42)) + [36], list(range(42, 48)) + [42]], 6.0)
  cheek_centres = [0.5 * (lm[2] + lm[31]) + np.array([0, 12, 8.0]),
                   0.5 * (lm[14] + lm[35]) + np.array([0, 12, 8.0])]
  cheeks = np.max([gaussian_weight(np.linalg.norm(mean - c, axis=1), 14.0) for c in cheek_centres], 0)
  nose = region([range(27, 31), range(31, 36)], 6.0)
  nose_tip = mean[landmarks[30]]
  face_mask = np.linalg.norm(mean - nose_tip, axis=1) <= 95.0
  skin_mask = face_mask * (1.0 - np.clip(lips + brows + 0.7 * eyes, 0.0, 1.0))

  # Procedural albedo, linear RGB in [0, 1].
  skin = np.array([0.70, 0.50, 0.40])
  mean_albedo = (np.tile(skin, (n_vertices, 1))
                 + lips[:, None] * np.array([0.02, -0.14, -0.10])
                 + brows[:, None] * np.array([-0.34, -0.27, -0.22])
                 + eyes[:, None] * np.array([-0.05, -0.05, -0.03]))
  y = mean[:, 1]
  y_norm = (y - y.mean()) / (y.max() - y.min())
  tex_basis = np.stack([
      0.12 * mean_albedo,                                                   # brightness
      np.tile([0.035, -0.005, -0.03], (n_vertices, 1)),                     # warmth
      np.tile([0.015, 0.025, -0.025], (n_vertices, 1)),                     # olive
      lips[:, None] * np.array([0.06, -0.04, -0.03]),                       # lips colour
      brows[:, None] * np.array([-0.10, -0.08, -0.07]),                     # brow darkness
      eyes[:, None] * np.array([-0.04, -0.04, -0.02]),                      # eye-region shadow
      (cheeks + 0.7 * nose)[:, None] * np.array([0.04, -0.02, -0.015]),     # cheek/nose redness
      y_norm[:, None] * np.array([0.04, 0.035, 0.03]),                      # forehead-chin gradient
  ], axis=-1)
  assert tex_basis.shape[-1] == len(ALBEDO_BASIS_NAMES)

  return dict(
      mean_shape=mean.astype(np.float32),
      id_basis=id_basis.astype(np.float32),
      exp_basis=exp_basis.astype(np.float32),
      mean_albedo=mean_albedo.astype(np.float32),
      tex_basis=tex_basis.astype(np.float32),
      triangles=tri.astype(np.int32),
      landmark_indices=landmarks.astype(np.int32),
      uv=uv.astype(np.float32),
      symmetry=sym.astype(np.int32),
      face_mask=face_mask,
      skin_mask=skin_mask.astype(np.float32),
      id_eigenvalues=eigenvalues.astype(np.float32),
      recentre_offset_mm=centre.astype(np.float32),
      expression_names=np.array(EXPRESSION_NAMES),
      albedo_basis_names=np.array(ALBEDO_BASIS_NAMES),
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sfm-dir", type=pathlib.Path, default=pathlib.Path("../shared/assets/sfm"))
  parser.add_argument("--out", type=pathlib.Path, default=OUT)
  args = parser.parse_args()
  arrays = with_contour_candidates(build(args.sfm_dir))
  args.out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
  for k, v in arrays.items():
    print(f"  {k:20s} {str(v.shape):16s} {v.dtype}")


if __name__ == "__main__":
  main()
