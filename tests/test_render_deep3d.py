"""msma-jax's render under Deep3DFaceRecon's camera against an independent transcription of Deep3D's renderer.

Deep3DFaceRecon_pytorch (util/nvdiffrast.py `MeshRenderer`, models/bfm.py) renders with nvdiffrast at
224x224, focal 1015 px, principal point 112 px, camera at z = 10 (BFM units), znear 5, zfar 15. The
NumPy transcription below is written from those formulas alone (it imports nothing from
msma_jax.render or msma_jax.camera): Deep3D's projection matrix, nvdiffrast's pixel-centre inside test
(both windings drawn, nearest depth wins), and perspective-correct interpolation of the camera
distance z_r = 10 - z (Deep3D's depth map) and of a per-vertex colour (its image).

Asserted: the mask (msma-jax without antialiasing or backface culling) equals the transcription pixel
for pixel except where a pixel centre lies within EDGE_TOL_PX of a triangle edge (counted, excluded
explicitly); the visible triangle agrees except where two surfaces are within DEPTH_TIE of each other;
depth agrees to float32 precision and the colour image to 1e-4. The landmark test pins Deep3D's
half-pixel landmark offset with numbers. Figures measured by these tests: docs/BENCHMARKS.md, "Deep3DFaceRecon parity (issue 22)".
"""
import math

import jax
import numpy as np
import pytest
import scipy.io

from bfm_fixtures import grid_triangles
from msma_jax import camera as cam
from msma_jax import lighting
from msma_jax.face_model.io import BFM_CAMERA, load_bfm_front_mat
from msma_jax.render import render_face

SIZE = 224                 # Deep3D's render size (pixels)
FOCAL, CENTRE, CAM_Z = 1015.0, 112.0, 10.0
ZNEAR, ZFAR = 5.0, 15.0
# Pixel centres this close to an edge (pixels) are ambiguous: msma-jax includes a centre lying exactly
# on an edge (all edge functions >= 0), nvdiffrast follows a hardware fill rule (top-left); at 1e-4 px
# float32 rounding of the two pipelines can also land on either side.
EDGE_TOL_PX = 1e-4
# Two surfaces whose depths at a pixel differ by less than this (BFM units, ~1e-5 relative) may be
# resolved either way by float32 vs float64; only the triangle id / colour are excluded there.
DEPTH_TIE = 1e-4


# ---- the Deep3D transcription (NumPy, float64) -------------------------------------------------------

def deep3d_ndc_projection():
  """[4, 4] Deep3D's `ndc_projection(x=tan(fov/2)·znear, n=znear, f=zfar) @ diag(1, -1, -1, 1)`."""
  fov = 2.0 * math.degrees(math.atan(CENTRE / FOCAL))          # rasterize_fov, degrees
  n, f = ZNEAR, ZFAR
  x_t = math.tan(math.radians(fov) / 2.0) * n
  proj = np.array([[n / x_t, 0, 0, 0],
                   [0, -n / x_t, 0, 0],
                   [0, 0, -(f + n) / (f - n), -2 * f * n / (f - n)],
                   [0, 0, -1, 0]], np.float64)
  return proj @ np.diag([1.0, -1.0, -1.0, 1.0])


def deep3d_clip(vertices):
  """[V, 3] model/world vertices (y up, face toward +z, BFM units) -> [V, 4] Deep3D clip coordinates.

  `to_camera`: z_r = 10 - z; MeshRenderer negates y and appends w = 1, then multiplies by the
  projection: x_ndc = (1015/112)·x/z_r, y_ndc = -(1015/112)·y/z_r, clip w = z_r.
  """
  v = np.asarray(vertices, np.float64)
  hom = np.stack([v[:, 0], -v[:, 1], CAM_Z - v[:, 2], np.ones(len(v))], -1)
  return hom @ deep3d_ndc_projection().T


def deep3d_render(vertices, triangles, colours, centre_offset=(0.5, 0.5)):
  """nvdiffrast as Deep3D calls it: no culling, no antialiasing, 224x224.

  vertices [V, 3] world (BFM units), triangles [F, 3], colours [V, C]; centre_offset: where pixel
  centres sit within a pixel (x, y) — nvdiffrast's (0.5, 0.5); other values only for the test that
  shows a half-pixel shift would be caught.
  Returns dict: mask [H, W] bool, depth [H, W] (z_r = 10 - z interpolated, 0 on background),
  image [H, W, C] (0 on background), tri [H, W] visible triangle (-1 background), edge [H, W] bool
  (a centre within EDGE_TOL_PX px of some triangle's boundary), tie [H, W] bool (the two nearest
  surfaces at the pixel are within DEPTH_TIE), clip [V, 4].
  Pixel (row i, col j) has its centre at NDC (2(j+.5)/W - 1, 2(i+.5)/H - 1): row 0 is y_ndc = -1.
  """
  clip = deep3d_clip(vertices)
  w = clip[:, 3]
  assert np.all((w > ZNEAR) & (w < ZFAR)), "every vertex between the planes: no clipping happens"
  ndc = clip[:, :2] / w[:, None]
  pix = (ndc + 1.0) * (SIZE / 2.0)        # pixel units from the top-left corner, centres at +0.5
  zbuf = np.full((SIZE, SIZE), np.inf)
  zsecond = np.full((SIZE, SIZE), np.inf)
  image = np.zeros((SIZE, SIZE, colours.shape[1]))
  tri_id = np.full((SIZE, SIZE), -1)
  edge = np.zeros((SIZE, SIZE), bool)
  for t, (a, b, c) in enumerate(np.asarray(triangles)):
    p = pix[[a, b, c]]                                                # [3, 2]
    area = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[1, 1] - p[0, 1]) * (p[2, 0] - p[0, 0])
    if area == 0:
      continue
    j0 = max(0, int(np.floor(p[:, 0].min())) - 1)
    j1 = min(SIZE - 1, int(np.ceil(p[:, 0].max())) + 1)
    i0 = max(0, int(np.floor(p[:, 1].min())) - 1)
    i1 = min(SIZE - 1, int(np.ceil(p[:, 1].max())) + 1)
    if j0 > j1 or i0 > i1:
      continue                                                        # off-screen
    cy, cx = np.meshgrid(np.arange(i0, i1 + 1) + centre_offset[1],
                         np.arange(j0, j1 + 1) + centre_offset[0], indexing="ij")
    # e[k]: edge function of the edge opposite vertex k (twice the sub-triangle's signed area);
    # e[k] / area are the screen-space barycentrics, e[k]·sign / |edge| the signed distance (px).
    e, dist = [], []
    for k in range(3):
      q, r = p[(k + 1) % 3], p[(k + 2) % 3]
      ek = (r[0] - q[0]) * (cy - q[1]) - (r[1] - q[1]) * (cx - q[0])
      e.append(ek)
      dist.append(np.sign(area) * ek / np.hypot(*(r - q)))
    dmin = np.minimum(np.minimum(dist[0], dist[1]), dist[2])
    sub = np.s_[i0:i1 + 1, j0:j1 + 1]
    edge[sub] |= np.abs(dmin) < EDGE_TOL_PX
    inside = dmin > 0                                                 # both windings
    bary = [ek / area for ek in e]
    ww = w[[a, b, c]]
    inv_w = bary[0] / ww[0] + bary[1] / ww[1] + bary[2] / ww[2]      # 1/w is affine on screen
    z = 1.0 / inv_w                                                   # perspective-correct z_r
    lam = [bk / wk / inv_w for bk, wk in zip(bary, ww)]              # perspective-correct weights
    col = sum(lk[..., None] * colours[v] for lk, v in zip(lam, (a, b, c)))
    zb, zs = zbuf[sub], zsecond[sub]
    win = inside & (z < zb)
    zsecond[sub] = np.where(win, zb, np.where(inside, np.minimum(zs, z), zs))
    zbuf[sub] = np.where(win, z, zb)
    image[sub] = np.where(win[..., None], col, image[sub])
    tri_id[sub] = np.where(win, t, tri_id[sub])
  mask = np.isfinite(zbuf)
  gap = np.where(np.isfinite(zsecond), zsecond, np.inf) - np.where(mask, zbuf, 0.0)
  return dict(mask=mask, depth=np.where(mask, zbuf, 0.0), image=image, tri=tri_id, edge=edge,
              tie=mask & (gap < DEPTH_TIE), clip=clip)


# ---- the scene: a BFM_model_front.mat around a given mesh ---------------------------------------------

def scene_mesh(rng, n=15):
  """A bumpy, jittered grid at z ≈ 0 (CCW from +z) plus three loose triangles, BFM units.

  Extra triangles: a clockwise (back-facing) one in front of the surface and partly beyond it, one
  that cuts through the surface (per-pixel depth test, not per-triangle order), one running off the
  image's right border. Returns (vertices [V, 3], triangles [F, 3]).
  """
  xs, ys = np.meshgrid(np.linspace(-0.75, 0.75, n), np.linspace(-0.85, 0.8, n))
  xs = xs + rng.uniform(-0.02, 0.02, xs.shape)
  ys = ys + rng.uniform(-0.02, 0.02, ys.shape)
  z = 0.12 * np.sin(4 * xs) * np.cos(3 * ys) + 0.3 * np.exp(-(xs ** 2 + ys ** 2) / 0.3)
  grid = np.stack([xs, ys, z], -1).reshape(-1, 3)
  tris = grid_triangles(n).tolist()
  extra = np.array([[-0.3, -0.2, 0.7], [0.1, 0.95, 0.65], [0.5, 0.1, 0.75],      # clockwise, front
                    [-0.9, -0.6, -0.3], [0.2, -0.75, 0.6], [-0.35, -0.05, 0.45],  # through surface
                    [1.0, -0.3, 0.2], [1.6, -0.2, 0.2], [1.2, 0.35, 0.1]])        # off the border
  m = len(grid)
  tris += [[m, m + 1, m + 2], [m + 3, m + 4, m + 5], [m + 6, m + 7, m + 8]]
  return np.concatenate([grid, extra]), np.array(tris)


@pytest.fixture(scope="module")
def bfm(tmp_path_factory):
  """(FaceModel loaded from a generated BFM_model_front.mat, mesh vertices as written)."""
  rng = np.random.default_rng(7)
  verts, tris = scene_mesh(rng)
  nv, k = len(verts), 2
  d = {"meanshape": verts.reshape(1, -1).astype(np.float32),
       "idBase": np.zeros((3 * nv, k), np.float32), "exBase": np.zeros((3 * nv, k), np.float32),
       "meantex": rng.uniform(20, 235, (1, 3 * nv)).astype(np.float32),
       "texBase": np.zeros((3 * nv, k), np.float32),
       "tri": (tris + 1).astype(np.float64),
       "keypoints": (rng.choice(nv, 68, replace=False) + 1).reshape(1, 68).astype(np.float64)}
  path = tmp_path_factory.mktemp("bfm") / "BFM_model_front.mat"
  scipy.io.savemat(str(path), d)
  return load_bfm_front_mat(path)


# Two poses (Deep3D's angle / trans coefficients): mild, and a turn that makes the bumps self-occlude.
ANGLES = np.array([[0.15, -0.25, 0.05], [-0.2, 0.55, -0.1]], np.float32)
TRANS = np.array([[0.03, -0.02, 0.1], [-0.05, 0.04, -0.3]], np.float32)


@pytest.fixture(scope="module")
def rendered(bfm):
  """msma-jax's render of the two poses: (RenderOutput, camera, coefficients)."""
  camera = cam.Camera.for_face_model(bfm, 224)
  coeffs = bfm.zero_coefficients((2,)).replace(angle=jax.numpy.asarray(ANGLES),
                                               trans=jax.numpy.asarray(TRANS))
  out = jax.jit(lambda c: render_face(bfm, c, camera, antialias=False, cull_backfaces=False,
                                      with_depth=True))(coeffs)
  return out, camera, coeffs


def test_bfm_camera_is_deep3d():
  assert (BFM_CAMERA.focal, BFM_CAMERA.principal, BFM_CAMERA.distance) == (FOCAL, CENTRE, CAM_Z)
  assert (BFM_CAMERA.near, BFM_CAMERA.far, BFM_CAMERA.image_size) == (ZNEAR, ZFAR, SIZE)


def test_camera_for_bfm_model(bfm, rendered):
  _, camera, _ = rendered
  assert camera.focal == FOCAL and camera.principal == (CENTRE, CENTRE)
  assert camera.distance == CAM_Z and (camera.near, camera.far) == (ZNEAR, ZFAR)
  assert camera.image_size == (SIZE, SIZE) and camera.projection == "perspective"


def test_clip_space_is_deep3d_up_to_the_y_flip(rendered):
  """msma-jax's clip = Deep3D's with y negated (its NDC y = +1 is the top row, nvdiffrast's row 0 is
  y_ndc = -1 and Deep3D negates y): both put a vertex at the same pixel, x = 112 + 1015·x/z_r,
  y = 112 - 1015·y/z_r. z and w are identical (same near/far OpenGL depth, w = z_r)."""
  out, camera, _ = rendered
  for b in range(2):
    world = np.asarray(out.vertices[b], np.float64)
    ours = np.asarray(cam.to_clip(jax.numpy.asarray(out.vertices[b]), camera), np.float64)
    theirs = deep3d_clip(world)
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours * [1, -1, 1, 1], theirs, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("b", [0, 1])
def test_render_matches_deep3d_pixel_for_pixel(bfm, rendered, b):
  """Mask, depth, visible triangle and colour image of msma-jax vs the transcription of Deep3D.

  Shapes: mask / depth [224, 224] (depth in BFM units, z_r = 10 - z), image [224, 224, 3].
  """
  out, _, coeffs = rendered
  world = np.asarray(out.vertices[b], np.float64)
  tris = np.asarray(bfm.triangles)
  # Per-vertex colours as render_face shades them with gamma = 0: a constant irradiance
  # 0.8·π·(1/√(4π)) (lighting.py, Deep3D's ambient offset) times the albedo; both renderers
  # interpolate these per-vertex colours (Gouraud), so this is the attribute being compared.
  assert np.all(np.asarray(coeffs.gamma) == 0)
  colours = np.asarray(bfm.mean_albedo, np.float64) * 0.8 * lighting.SH_A[0] * lighting.SH_C[0]
  ref = deep3d_render(world, tris, colours)

  mask = np.asarray(out.mask[b])
  assert set(np.unique(mask)) <= {0.0, 1.0}                           # no antialiasing
  mask = mask > 0.5
  keep = ~ref["edge"]
  n_edge = int(ref["edge"].sum())
  assert n_edge <= 10, f"{n_edge} pixel centres within {EDGE_TOL_PX} px of an edge"
  assert 0.25 < ref["mask"].mean() < 0.6                             # a real part of the image
  assert ref["mask"][:, -1].any()                                    # the border triangle is cut
  mismatch = (mask != ref["mask"]) & keep
  assert not mismatch.any(), f"mask differs at {np.argwhere(mismatch)[:10]}"

  # Visible triangle: both back-facing (cw) and front-facing triangles are drawn, nearest wins.
  ids = np.asarray(out.fragments.triangle_id[b])
  sure = keep & ~ref["tie"]
  assert not ((ids != ref["tri"]) & sure).any()
  f = len(tris)
  assert (ref["tri"] == f - 3).sum() > 200                           # the cw occluder is visible
  assert (ref["tri"] == f - 2).sum() > 50                            # so is the cutting triangle

  depth = np.asarray(out.depth[b], np.float64)
  assert np.all(depth[~ref["mask"] & keep] == 0)                     # Deep3D: mask * depth
  cov = ref["mask"] & keep
  rel = np.abs(depth[cov] - ref["depth"][cov]) / ref["depth"][cov]
  assert rel.max() < 1e-5, rel.max()                                 # float32 precision

  image = np.asarray(out.image[b], np.float64)
  diff = np.abs(image - ref["image"])[sure]
  assert diff.max() < 1e-4, diff.max()
  assert np.all(image[~ref["mask"] & keep] == 0)                     # black background

  # msma-jax's fragments put each covered pixel's surface point at the pixel centre (+0.5) in the
  # landmark convention: project(Σ λ_i V_i) = (j + .5, i + .5).
  bary = np.asarray(out.fragments.barycentric[b], np.float64)[cov]
  rows, cols = np.nonzero(cov)
  point = np.einsum("pk,pkc->pc", bary, world[tris[ids[cov]]])
  x = FOCAL * point[:, 0] / (CAM_Z - point[:, 2]) + CENTRE
  y = CENTRE - FOCAL * point[:, 1] / (CAM_Z - point[:, 2])
  centre_err = max(np.abs(x - cols - 0.5).max(), np.abs(y - rows - 0.5).max())
  assert centre_err < 2e-3, centre_err
  # The comparison is sharp enough to see a half-pixel shift of the render: pixel centres at
  # integers (x, y or both) would disagree with msma-jax's mask on many non-edge pixels.
  shifted = [int((deep3d_render(world, tris, colours, off)["mask"] != mask).sum())
             for off in ((0.0, 0.5), (0.5, 0.0), (0.0, 0.0))]
  assert min(shifted) > 100, shifted
  print(f"\npose {b}: half-pixel-shifted mask mismatches (x, y, both) {shifted}")
  print(f"pose {b}: covered {int(ref['mask'].sum())} px, edge-excluded {n_edge}, depth ties "
        f"{int((ref['tie'] & keep).sum())}, max depth rel diff {rel.max():.2e} "
        f"(abs {np.abs(depth[cov] - ref['depth'][cov]).max():.2e}), max image diff "
        f"{diff.max():.2e}, pixel-centre reprojection {centre_err:.2e} px")


def test_landmarks_half_pixel_offset_of_deep3d(bfm, rendered):
  """Deep3D's `to_image` landmarks vs msma-jax's landmarks_2d (pixel positions, centres at +0.5).

  Deep3D: x = 112 + 1015·x/z_r, y = 112 + 1015·y/z_r (y up), and it compares them with detected
  landmarks given as pixel indices (pixel centre at an integer) flipped to H - 1 - y. msma-jax:
  x = 112 + 1015·x/z_r, y = 112 - 1015·y/z_r, where its render draws that vertex. Hence Deep3D's
  numbers are msma-jax's with y' = 224 - y, and read as Deep3D reads them (index = position - 0.5,
  row index = 223 - y') they place the vertex 0.5 px right of and 0.5 px above the rendered vertex.
  """
  out, _, _ = rendered
  lm = np.asarray(out.landmarks_2d, np.float64)                      # [2, 68, 2]
  world = np.asarray(out.vertices, np.float64)
  kp = np.asarray(bfm.landmark_indices)
  v = world[:, kp]                                                    # [2, 68, 3]
  zr = CAM_Z - v[..., 2]
  d3d = np.stack([CENTRE + FOCAL * v[..., 0] / zr, CENTRE + FOCAL * v[..., 1] / zr], -1)
  np.testing.assert_allclose(d3d[..., 0], lm[..., 0], atol=1e-3)
  np.testing.assert_allclose(d3d[..., 1], SIZE - lm[..., 1], atol=1e-3)
  # Where the renderer draws the vertex: Deep3D's own clip -> nvdiffrast pixel position.
  drawn = np.stack([(deep3d_clip(w)[:, :2] / deep3d_clip(w)[:, 3:])[kp] for w in world])
  drawn = (drawn + 1.0) * (SIZE / 2.0)
  np.testing.assert_allclose(lm, drawn, atol=1e-3)                   # msma-jax: landmark = render
  # Deep3D's landmark as a position in the same top-left, centre-at-+0.5 frame.
  as_position = np.stack([d3d[..., 0] + 0.5, (SIZE - 1 - d3d[..., 1]) + 0.5], -1)
  np.testing.assert_allclose(as_position - drawn, np.broadcast_to([0.5, -0.5], drawn.shape),
                             atol=1e-3)
  # One vertex spelled out: the first landmark of pose 0.
  print(f"\nlandmark 0: msma-jax (x, y) = ({lm[0, 0, 0]:.4f}, {lm[0, 0, 1]:.4f}); Deep3D to_image = "
        f"({d3d[0, 0, 0]:.4f}, {d3d[0, 0, 1]:.4f}); as a position ({as_position[0, 0, 0]:.4f}, "
        f"{as_position[0, 0, 1]:.4f})")
