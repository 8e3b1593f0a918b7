#!/usr/bin/env python
"""Builds msma_jax/assets/ict_face_model.npz from the ICT Face Model Light (ICT-FaceKit, MIT licence).

Run once by a maintainer; the output and msma_jax/assets/LICENSE-ICT.md are committed and the package
never reads the source files at run time:

    python scripts/build_ict_face_model.py --ict-dir DIR

DIR holds the ICT-FaceKit model converted to one npz (`ict_face_model.npz`: `neutral`, `faces`,
`face_material`, `materials`, `identity_deltas`, `expression_deltas`, `expression_names`, in cm) and
the original `vertex_indices.json`, `LICENSE` and `CREDITS.md`. A missing or unreadable file is one
line naming it, exit status 2.

What it derives, and why (the same facts are in msma_jax/assets/LICENSE-ICT.md and docs/MODELS.md):

* region: face (ICT vertices 0-9408), head and neck (9409-11247), the mouth socket (11248-13293),
  the eye sockets (13294-14061) and the front halves of the eyeballs (from 21451-24590). The face
  mesh has holes at the mouth and the eyes; without the socket an open mouth (jawOpen) shows the
  background through the head, and without eyeballs the eyes are holes. Gums, tongue, teeth,
  lacrimal fluid, eye blend/occlusion shells and eyelashes are left out: they are hidden behind the
  lips or are thin transparent shells our opaque rasterizer cannot draw, and cost 9,000 vertices.
  The eyeballs' back halves (z behind the eyeball centre) are never visible (the eyeLook shapes turn
  them by ~10 degrees) and are dropped. Face and head vertices keep their ICT numbers (0-11247);
  `source_vertex_index` maps every vertex to its ICT vertex.
* triangles: each quad split along its shorter diagonal of the neutral mesh; the build asserts one
  consistent orientation (each half-edge used once) and makes front faces CCW seen from the front
  (normals toward +z), as in the SFM model.
* units: millimetres (ICT is in cm: x 10). Axes as ICT's: x to the subject's left, y up, face to +z.
* re-centring: x = 0 is ICT's symmetry plane; y and z are shifted so that the mean of the 68
  landmarks lies where the SFM embedded model's lies (same height and depth), so the SFM default
  camera (focal 1015 px at 224 px, 1000 mm away) frames the ICT face like the SFM face and crops made
  for one model suit the other. The offset is stored as `recentre_offset_mm`.
* identity: the 100 ICT identity morph targets minus the neutral, in mm. ICT-FaceKit draws random
  identities as N(0, 1) weights on exactly these targets (they are PCA modes scaled to one standard
  deviation), so the coefficients are ~ N(0, 1) without rescaling. (The SFM's first mode has an rms
  of 4.0 mm per vertex, ICT's 4.7 mm.)
* expression: the 53 ARKit-named blendshapes of `vertex_indices.json` (order kept) as offsets in mm;
  weight 1 is the full expression (blendshape weights are meant to lie in [0, 1]). ICT's extra
  PupilDilate_L/R and cheekRaiser_L/R are left out.
* 68 landmarks (iBUG order, 0-based): `idx_to_landmark_verts` of `vertex_indices.json`, with the
  jaw points 1-8 and 10-17 replaced by ICT-FaceKit's alternative jawline, which lies on the visible
  face contour like a 2D detector's jaw points rather than under the jaw. ICT's own list is kept as
  `landmark_indices_ict`. `contour_candidates` [17, K]: per jaw landmark a band of vertices across
  the cheek for the silhouette-following jaw points (`msma_jax.contour`).
* symmetry: nearest vertex of the mirrored neutral (x -> -x); the ICT topology is exactly symmetric,
  so the build asserts an involution with mirror error below 0.1 mm.
* regions, masks and procedural albedo as in scripts/build_embedded_face_model.py (Gaussian
  fall-off around landmark polylines): `face_mask` = face-area vertices within 95 mm of the nose tip
  (the MICC crop radius); `skin_mask` = face_mask weighted down on lips, brows and eyes. Albedo
  (ICT has no colour model), linear RGB in [0, 1]: the SFM model's skin tone, lips, brows and eye
  region, plus a dark red mouth interior, white sclera, brown iris, and a brown hair cap on the scalp
  and back of the head; 9 basis vectors (the SFM model's 8 and hair darkness) scaled so that
  coefficients ~ N(0, 1) give plausible skin.
* storage: identity and expression bases in fixed point, int16 counts of 0.01 mm in [K, V, 3]
  order (`<basis>_q`, `<basis>_step`; rounding <= 0.005 mm, about float16's for these offsets, at
  half the compressed size); albedo basis float16; the loader converts all to float32.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import zipfile

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from add_contour_candidates import with_contour_candidates  # noqa: E402
from build_embedded_face_model import gaussian_weight, polyline_distance  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "msma_jax" / "assets" / "ict_face_model.npz"
LICENSE_OUT = ROOT / "msma_jax" / "assets" / "LICENSE-ICT.md"
SFM_ASSET = ROOT / "msma_jax" / "assets" / "embedded_face_model.npz"

SOURCE_KEYS = ("neutral", "faces", "face_material", "materials", "identity_deltas",
               "expression_deltas", "expression_names")
CM_TO_MM = 10.0
N_EXPRESSIONS = 53
# ICT vertex / polygon ranges (ICT-FaceKit README): [start, stop).
FACE_VERTICES = (0, 9409)
FACE_HEAD_VERTICES = (0, 11248)
KEPT_POLYGONS = (0, 14034)              # face, head and neck, mouth socket, eye sockets
MOUTH_SOCKET_VERTICES = (11248, 13294)
EYE_SOCKET_VERTICES = (13294, 14062)
EYEBALL_VERTICES = ((21451, 23021), (23021, 24591))   # left, right
EYEBALL_POLYGONS = (21496, 24692)
# Iris and pupil: half-angles seen from the eyeball centre (ICT's eyeballs are ~30 mm across,
# with the cornea; a 12 mm iris and a 4-5 mm pupil).
IRIS_DEG, PUPIL_DEG = 24.0, 9.0
# Alternative jawline of the ICT-FaceKit README: iBUG points 1-8 (subject's right) and 10-17.
ALT_JAW_RIGHT = (1278, 1272, 12, 1834, 243, 781, 2199, 1447)
ALT_JAW_LEFT = (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496)
ALBEDO_BASIS_NAMES = ("brightness", "warmth", "olive", "lips", "brows", "eye_region",
                      "cheek_nose_redness", "vertical_gradient", "hair")
# Fixed-point step of the stored shape bases: rounding error <= 0.005 mm (float16 rounds ICT's
# largest identity offset, 13 mm, by up to 0.004 mm) at half float16's compressed size.
BASIS_STEP_MM = 0.01
CAMERA = (1015.0, 112.0, 1000.0, 500.0, 1500.0, 224.0)   # focal, principal, distance, near, far, size


class SourceError(Exception):
  """A source file that is missing or unreadable (reported as one line, exit 2)."""


# ---- reading ------------------------------------------------------------------------------------

def read_source(ict_dir: pathlib.Path) -> tuple[dict[str, np.ndarray], dict]:
  """(arrays of ict_face_model.npz, vertex_indices.json as a dict); SourceError names a bad file."""
  npz_path, json_path = ict_dir / "ict_face_model.npz", ict_dir / "vertex_indices.json"
  for p in (npz_path, json_path, ict_dir / "LICENSE", ict_dir / "CREDITS.md"):
    if not p.is_file():
      raise SourceError(f"{p}: file not found")
  try:
    with np.load(npz_path, allow_pickle=False) as z:
      missing = [k for k in SOURCE_KEYS if k not in z.files]
      if missing:
        raise SourceError(f"{npz_path}: lacks arrays {missing}")
      arrays = {k: z[k] for k in SOURCE_KEYS}
  except SourceError:
    raise
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise SourceError(f"{npz_path}: not a readable npz ({type(e).__name__}: {e})") from e
  try:
    indices = json.loads(json_path.read_text())
    _ = indices["idx_to_landmark_verts"], indices["expressions"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise SourceError(f"{json_path}: not the ICT vertex_indices.json ({type(e).__name__}: {e})") from e
  n = arrays["neutral"].shape
  if n != (26719, 3) or arrays["faces"].shape != (26384, 4):
    raise SourceError(f"{npz_path}: neutral {n} / faces {arrays['faces'].shape}, expected "
                      "(26719, 3) / (26384, 4) (the ICT Face Model Light)")
  return arrays, indices


# ---- geometry -----------------------------------------------------------------------------------

def kept_vertices(neutral_mm: np.ndarray) -> np.ndarray:
  """[V] sorted ICT vertex ids: face, head, sockets, and the eyeballs' front halves."""
  parts = [np.arange(FACE_HEAD_VERTICES[0], EYE_SOCKET_VERTICES[1])]
  for a, b in EYEBALL_VERTICES:
    ids = np.arange(a, b)
    centre_z = 0.5 * (neutral_mm[ids, 2].min() + neutral_mm[ids, 2].max())
    parts.append(ids[neutral_mm[ids, 2] >= centre_z])
  return np.concatenate(parts)


def triangulate(polygons: np.ndarray, neutral: np.ndarray) -> np.ndarray:
  """[P, 4] quads (4th index -1 for a triangle) -> [F, 3], quads split along the shorter diagonal."""
  tri_rows = polygons[polygons[:, 3] < 0, :3]
  quads = polygons[polygons[:, 3] >= 0]
  d02 = np.linalg.norm(neutral[quads[:, 0]] - neutral[quads[:, 2]], axis=1)
  d13 = np.linalg.norm(neutral[quads[:, 1]] - neutral[quads[:, 3]], axis=1)
  use02 = d02 <= d13
  a = np.where(use02[:, None], quads[:, [0, 1, 2]], quads[:, [0, 1, 3]])
  b = np.where(use02[:, None], quads[:, [0, 2, 3]], quads[:, [1, 2, 3]])
  return np.concatenate([tri_rows, a, b]).astype(np.int64)


def kept_triangles(faces: np.ndarray, keep: np.ndarray, neutral: np.ndarray) -> np.ndarray:
  """[F, 3] triangles in new vertex numbers, from the kept polygon ranges whose vertices are kept."""
  polys = np.concatenate([faces[KEPT_POLYGONS[0]:KEPT_POLYGONS[1]],
                          faces[EYEBALL_POLYGONS[0]:EYEBALL_POLYGONS[1]]])
  new_index = np.full(len(neutral), -1, np.int64)
  new_index[keep] = np.arange(len(keep))
  corner_ok = (polys < 0) | (new_index[np.maximum(polys, 0)] >= 0)
  polys = polys[corner_ok.all(axis=1)]
  tri = triangulate(polys, neutral)
  return new_index[tri]


def check_orientation(tri: np.ndarray, mean: np.ndarray, front: np.ndarray) -> np.ndarray:
  """Asserts a consistent winding (each half-edge once); flips all so front triangles face +z."""
  edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
  assert len(np.unique(edges, axis=0)) == len(edges), "a half-edge is used twice: inconsistent winding"
  n = np.cross(mean[tri[:, 1]] - mean[tri[:, 0]], mean[tri[:, 2]] - mean[tri[:, 0]])
  if (n[front, 2] > 0).mean() < 0.5:
    tri = tri[:, [0, 2, 1]]
  return tri


def symmetry_map(mean: np.ndarray) -> np.ndarray:
  """[V] mirror vertex of each vertex (nearest vertex of the mirrored mean), asserted exact."""
  dist, sym = cKDTree(mean).query(mean * np.array([-1.0, 1.0, 1.0]))
  assert dist.max() < 0.1, f"mirror error {dist.max():.3f} mm: the topology is not symmetric"
  assert np.array_equal(sym[sym], np.arange(len(mean))), "symmetry is not an involution"
  return sym


def landmarks_ibug(indices: dict) -> tuple[np.ndarray, np.ndarray]:
  """(68 landmarks with the alternative jawline, ICT's own 68), ICT vertex ids, iBUG order."""
  ict = np.asarray(indices["idx_to_landmark_verts"], np.int64)
  assert ict.shape == (68,), ict.shape
  lm = ict.copy()
  lm[0:8] = ALT_JAW_RIGHT
  lm[9:17] = ALT_JAW_LEFT
  return lm, ict


def recentre_offset(lm_mm: np.ndarray) -> np.ndarray:
  """[3] mm added to the ICT vertices: landmark mean at the SFM model's landmark mean in y and z."""
  with np.load(SFM_ASSET) as z:
    sfm_lm = z["mean_shape"][z["landmark_indices"]].astype(np.float64)
  target = sfm_lm.mean(axis=0)
  return np.array([0.0, target[1] - lm_mm[:, 1].mean(), target[2] - lm_mm[:, 2].mean()])


# ---- regions and albedo -------------------------------------------------------------------------

def region_weights(mean: np.ndarray, lm_idx: np.ndarray) -> dict[str, np.ndarray]:
  """[V] weights in [0, 1] (Gaussian fall-off, mm) for lips, brows, eyes, cheeks and nose."""
  lm = mean[lm_idx]

  def region(polylines, sigma):
    d = np.min([polyline_distance(mean, lm[list(p)]) for p in polylines], axis=0)
    return gaussian_weight(d, sigma)
  cheek_centres = [0.5 * (lm[2] + lm[31]) + np.array([0, 12, 8.0]),
                   0.5 * (lm[14] + lm[35]) + np.array([0, 12, 8.0])]
  return dict(
      lips=region([list(range(48, 60)) + [48], list(range(60, 68)) + [60]], 3.0),
      brows=region([range(17, 22), range(22, 27)], 3.5),
      eyes=region([list(range(36, 42)) + [36], list(range(42, 48)) + [42]], 6.0),
      cheeks=np.max([gaussian_weight(np.linalg.norm(mean - c, axis=1), 14.0)
                     for c in cheek_centres], 0),
      nose=region([range(27, 31), range(31, 36)], 6.0))


def hair_weight(mean: np.ndarray, lm_idx: np.ndarray, on_head: np.ndarray) -> np.ndarray:
  """[V] hair-cap weight: above a hairline 55 mm over the brows at the front that drops to ear
  height behind the ears (smooth in y, 8 mm); 0 off the face and head skin."""
  lm = mean[lm_idx]
  brow_y, eye_y = lm[17:27, 1].mean(), lm[36:48, 1].mean()
  ear_z = lm[[0, 16], 2].mean()                          # the jaw's top points lie near the ears
  front_z, back_z = lm[27, 2] - 25.0, ear_z - 20.0
  t = np.clip((front_z - mean[:, 2]) / (front_z - back_z), 0.0, 1.0)
  t = t * t * (3 - 2 * t)                                # smoothstep
  line_y = (brow_y + 55.0) * (1 - t) + (eye_y - 10.0) * t
  w = 1.0 / (1.0 + np.exp(-(mean[:, 1] - line_y) / 8.0))
  return w * on_head


def albedo_model(mean, regions, hair, labels, eye_angle) -> tuple[np.ndarray, np.ndarray]:
  """(mean albedo [V, 3], basis [V, 3, 9]) linear RGB; labels: [V] 0 skin, 1 mouth interior,
  2 eye socket, 3 sclera, 4 iris; eye_angle: [V] degrees from the eyeball's front pole (pupil)."""
  n = len(mean)
  lips, brows, eyes = regions["lips"], regions["brows"], regions["eyes"]
  skin_tone = np.array([0.70, 0.50, 0.40])
  skin = (np.tile(skin_tone, (n, 1))
          + lips[:, None] * np.array([0.02, -0.14, -0.10])
          + brows[:, None] * np.array([-0.34, -0.27, -0.22])
          + eyes[:, None] * np.array([-0.05, -0.05, -0.03]))
  hair_colour = np.array([0.20, 0.13, 0.09])
  skin = skin * (1 - hair[:, None]) + hair_colour * hair[:, None]
  other = {1: [0.30, 0.10, 0.10], 2: [0.45, 0.25, 0.22], 3: [0.80, 0.78, 0.75], 4: [0.15, 0.09, 0.06]}
  mean_albedo = skin.copy()
  for label, colour in other.items():
    mean_albedo[labels == label] = colour
  mean_albedo[eye_angle < PUPIL_DEG] = [0.03, 0.03, 0.03]
  is_skin = (labels == 0).astype(np.float64)[:, None]
  y = mean[:, 1]
  face_y = y[labels == 0]
  y_norm = (y - face_y.mean()) / (face_y.max() - face_y.min())
  tex_basis = np.stack([
      0.12 * mean_albedo,                                                        # brightness
      is_skin * np.array([0.035, -0.005, -0.03]),                                # warmth
      is_skin * np.array([0.015, 0.025, -0.025]),                                # olive
      lips[:, None] * is_skin * np.array([0.06, -0.04, -0.03]),                  # lips colour
      brows[:, None] * is_skin * np.array([-0.10, -0.08, -0.07]),                # brow darkness
      eyes[:, None] * is_skin * np.array([-0.04, -0.04, -0.02]),                 # eye shadow
      (regions["cheeks"] + 0.7 * regions["nose"])[:, None] * np.array([0.04, -0.02, -0.015]),
      is_skin * y_norm[:, None] * np.array([0.04, 0.035, 0.03]),                 # vertical gradient
      hair[:, None] * np.array([-0.07, -0.05, -0.035]),                          # hair darkness
  ], axis=-1)
  tex_basis[..., 6] *= is_skin                                                   # cheek/nose redness
  # Warmth, olive and redness stay off the hair (they describe skin, the hair has its own vector).
  for k in (1, 2, 6, 7):
    tex_basis[..., k] *= (1 - hair)[:, None]
  assert tex_basis.shape[-1] == len(ALBEDO_BASIS_NAMES)
  return mean_albedo, tex_basis


def vertex_labels(keep: np.ndarray, neutral_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """([V] labels 0 skin, 1 mouth interior, 2 eye socket, 3 sclera, 4 iris; [V] angle in degrees
  from the eyeball's front pole, 180 off the eyeballs).

  ICT's iris material covers the whole front of the eyeball (its texture draws the iris), so the
  iris is taken geometrically: within IRIS_DEG of the line from the eyeball centre to its front pole.
  """
  labels = np.zeros(len(keep), np.int8)
  angle = np.full(len(keep), 180.0)
  in_range = lambda r: (keep >= r[0]) & (keep < r[1])
  labels[in_range(MOUTH_SOCKET_VERTICES)] = 1
  labels[in_range(EYE_SOCKET_VERTICES)] = 2
  for r in EYEBALL_VERTICES:
    ball = neutral_mm[r[0]:r[1]]
    centre = 0.5 * (ball.min(axis=0) + ball.max(axis=0))
    axis = ball[np.argmax(ball[:, 2])] - centre
    mine = in_range(r)
    d = neutral_mm[keep[mine]] - centre
    cos = d @ axis / (np.linalg.norm(d, axis=1) * np.linalg.norm(axis))
    angle[mine] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    labels[mine] = np.where(angle[mine] < IRIS_DEG, 4, 3)
  return labels, angle


# ---- the asset -----------------------------------------------------------------------------------

def fixed_point(basis: np.ndarray) -> np.ndarray:
  """[V, 3, K] mm -> int16 [K, V, 3] counts of BASIS_STEP_MM (mode-major compresses better)."""
  q = np.round(np.moveaxis(basis, -1, 0) / BASIS_STEP_MM)
  assert np.abs(q).max() < 2 ** 15, "a basis offset exceeds the int16 fixed-point range"
  return q.astype(np.int16)


def build(ict_dir: pathlib.Path) -> dict[str, np.ndarray]:
  src, indices = read_source(ict_dir)
  names = [str(s) for s in src["expression_names"][:N_EXPRESSIONS]]
  assert names == list(indices["expressions"]), "expression order differs from vertex_indices.json"
  neutral_all = src["neutral"].astype(np.float64) * CM_TO_MM
  keep = kept_vertices(neutral_all)
  assert np.array_equal(keep[:FACE_HEAD_VERTICES[1]], np.arange(FACE_HEAD_VERTICES[1]))
  lm, lm_ict = landmarks_ibug(indices)
  offset = recentre_offset(neutral_all[lm])
  mean = neutral_all[keep] + offset
  n = len(keep)

  tri = kept_triangles(src["faces"], keep, neutral_all)
  # Front triangles for the orientation test: face-area triangles facing the viewer's half-space.
  centroid = mean[tri].mean(axis=1)
  front = (tri < FACE_VERTICES[1]).all(axis=1) & (centroid[:, 2] > mean[lm[27], 2] - 20.0)
  tri = check_orientation(tri, mean, front)
  sym = symmetry_map(mean)

  id_basis = np.transpose(src["identity_deltas"][:, keep].astype(np.float64) * CM_TO_MM, (1, 2, 0))
  exp_basis = np.transpose(src["expression_deltas"][:N_EXPRESSIONS, keep].astype(np.float64)
                           * CM_TO_MM, (1, 2, 0))

  labels, eye_angle = vertex_labels(keep, neutral_all)
  on_face = keep < FACE_VERTICES[1]
  regions = region_weights(mean, lm)
  # Lips, brows and eye weights only on skin (the sockets lie within their fall-off radius).
  for k in regions:
    regions[k] = regions[k] * (labels == 0)
  hair = hair_weight(mean, lm, labels == 0)
  nose_tip = mean[lm[30]]
  face_mask = on_face & (np.linalg.norm(mean - nose_tip, axis=1) <= 95.0)
  skin_mask = face_mask * (1.0 - np.clip(regions["lips"] + regions["brows"] + 0.7 * regions["eyes"]
                                         + hair, 0.0, 1.0))
  mean_albedo, tex_basis = albedo_model(mean, regions, hair, labels, eye_angle)

  return dict(
      mean_shape=mean.astype(np.float32),
      id_basis_q=fixed_point(id_basis), id_basis_step=np.float32(BASIS_STEP_MM),
      exp_basis_q=fixed_point(exp_basis), exp_basis_step=np.float32(BASIS_STEP_MM),
      mean_albedo=mean_albedo.astype(np.float32),
      tex_basis=tex_basis.astype(np.float16),
      triangles=tri.astype(np.int32),
      landmark_indices=lm.astype(np.int32),          # face/head vertices keep their ICT numbers
      landmark_indices_ict=lm_ict.astype(np.int32),
      symmetry=sym.astype(np.int32),
      face_mask=face_mask,
      skin_mask=skin_mask.astype(np.float32),
      vertex_labels=labels,
      source_vertex_index=keep.astype(np.int32),
      recentre_offset_mm=offset.astype(np.float32),
      expression_names=np.array(names),
      albedo_basis_names=np.array(ALBEDO_BASIS_NAMES),
      name=np.array("embedded-ict"), unit=np.array("mm"), unit_in_mm=np.array(1.0),
      camera=np.array(CAMERA[:5], np.float64),
  )


def write_license(ict_dir: pathlib.Path, out: pathlib.Path) -> None:
  """LICENSE-ICT.md: the MIT notice and credits, copied verbatim, and what msma-jax derived."""
  head = out.read_text().split("\n## MIT licence")[0] if out.exists() else None
  licence = (ict_dir / "LICENSE").read_text().strip()
  credits = (ict_dir / "CREDITS.md").read_text().strip()
  if head is None:
    head = "# ICT face model: attribution and licence\n"
  out.write_text(f"{head.rstrip()}\n\n## MIT licence\n\n```\n{licence}\n```\n\n"
                 f"## ICT-FaceKit credits\n\n{credits.replace('# ICT-FaceKit - Credits', '').strip()}\n")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--ict-dir", type=pathlib.Path, required=True,
                      help="folder with ict_face_model.npz, vertex_indices.json, LICENSE, CREDITS.md")
  parser.add_argument("--out", type=pathlib.Path, default=OUT)
  args = parser.parse_args()
  try:
    arrays = with_contour_candidates(build(args.ict_dir))
  except SourceError as e:
    print(f"build_ict_face_model: {e}", file=sys.stderr)
    sys.exit(2)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  if args.out.resolve() == OUT.resolve():
    write_license(args.ict_dir, LICENSE_OUT)
  print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
  for k, v in arrays.items():
    print(f"  {k:22s} {str(v.shape):16s} {v.dtype}")


if __name__ == "__main__":
  main()
