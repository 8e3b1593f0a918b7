"""Face model: decode against independent formulas, loaders, embedded-model geometry, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

from bfm_fixtures import write_bfm_front_mat, write_raw_bfm09
from msma_jax import camera as cam
from msma_jax.face_model import (BFM_SIZES, CoefficientError, Coefficients, CoefficientSizes,
                                 FaceModelError, load_face_model, save_npz, validate_coefficients)
from msma_jax.face_model.bfm_convert import convert_bfm2009, read_exp_pca_bin
from msma_jax.lighting import face_normals


def random_coeffs(sizes, batch, rng):
  return Coefficients.from_flat(jnp.asarray(rng.normal(size=(batch, sizes.total)), jnp.float32),
                                sizes)


# ---- embedded model -------------------------------------------------------------------------------

def test_embedded_sizes_and_dtypes(embedded):
  assert embedded.sizes == CoefficientSizes(id=63, exp=6, tex=8)
  assert embedded.n_vertices == 3448 and embedded.n_triangles == 6736
  assert embedded.unit == "mm" and embedded.unit_in_mm == 1.0
  assert embedded.expression_names == ("anger", "disgust", "fear", "happiness", "sadness",
                                       "surprise")
  v, a = embedded.decode(embedded.zero_coefficients((2,)))
  assert v.shape == (2, 3448, 3) and a.shape == (2, 3448, 3)
  assert v.dtype == jnp.float32 and a.dtype == jnp.float32
  assert embedded.landmarks_3d(v).shape == (2, 68, 3)
  assert embedded.uv.shape == (3448, 2) and embedded.triangles.dtype == jnp.int32


def test_embedded_decode_matches_numpy_formula(embedded, rng):
  c = random_coeffs(embedded.sizes, 3, rng)
  v, a = jax.jit(embedded.decode)(c)
  mean = np.asarray(embedded.mean_shape, np.float64).reshape(-1)
  idb = np.asarray(embedded.id_basis, np.float64).reshape(-1, 63)
  exb = np.asarray(embedded.exp_basis, np.float64).reshape(-1, 6)
  ref_v = mean + np.asarray(c.id, np.float64) @ idb.T + np.asarray(c.exp, np.float64) @ exb.T
  np.testing.assert_allclose(np.asarray(v).reshape(3, -1), ref_v, atol=2e-3)  # mm, float32
  mt = np.asarray(embedded.mean_albedo, np.float64).reshape(-1)
  tb = np.asarray(embedded.tex_basis, np.float64).reshape(-1, 8)
  np.testing.assert_allclose(np.asarray(a).reshape(3, -1), mt + np.asarray(c.tex) @ tb.T, atol=1e-5)


def test_identity_coefficients_are_unit_variance(embedded):
  # Rescaled basis: column norms are sqrt(eigenvalue) of the SFM PCA (first 56502.4 mm²).
  norms = np.linalg.norm(np.asarray(embedded.id_basis).reshape(-1, 63), axis=0)
  np.testing.assert_allclose(norms[0] ** 2, 56502.367, rtol=1e-4)
  assert np.all(np.diff(norms) <= 1e-3)


def test_decode_grad_and_vmap(embedded, rng):
  c = random_coeffs(embedded.sizes, 2, rng)
  loss = lambda c: jnp.sum(embedded.shape(c) ** 2) * 1e-6
  g = jax.grad(loss)(c)
  assert np.all(np.isfinite(np.asarray(g.id))) and np.abs(np.asarray(g.id)).sum() > 0
  single = jax.tree.map(lambda x: x[0], c)
  vm = jax.vmap(embedded.shape)(c)
  np.testing.assert_allclose(np.asarray(vm[0]), np.asarray(embedded.shape(single)), atol=1e-4)


def test_symmetry_is_an_involution_that_mirrors_the_mean(embedded):
  sym = np.asarray(embedded.symmetry)
  assert np.array_equal(sym[sym], np.arange(embedded.n_vertices))
  mean = np.asarray(embedded.mean_shape)
  mirrored = mean[sym] * np.array([-1, 1, 1])
  assert np.median(np.linalg.norm(mirrored - mean, axis=1)) < 1.0  # mm
  lm = np.asarray(embedded.landmark_indices)
  # iBUG left/right pairs (0-based): jaw 0<->16, brows 17<->26, eye corners 36<->45, mouth 48<->54.
  for a, b in [(0, 16), (3, 13), (17, 26), (36, 45), (39, 42), (48, 54), (60, 64)]:
    assert sym[lm[a]] == lm[b]


def test_triangles_consistently_oriented_and_outward(embedded):
  tri = np.asarray(embedded.triangles)
  half_edges = {(int(a), int(b)) for t in tri for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
  assert len(half_edges) == 3 * len(tri)          # no half-edge used twice: consistent winding
  v = embedded.shape(embedded.zero_coefficients())
  n = np.asarray(face_normals(v, embedded.triangles))
  mean = np.asarray(v)
  centroid = mean[tri].mean(axis=1)
  # Front region: triangles whose vertices lie inside the inner-face box spanned by the landmarks.
  lm = mean[np.asarray(embedded.landmark_indices)]
  inside = ((np.abs(mean[:, 0]) < np.abs(lm[[36, 45], 0]).min())
            & (mean[:, 1] < lm[19, 1]) & (mean[:, 1] > lm[57, 1]))
  front = inside[tri].all(axis=1)
  assert front.sum() > 1000
  # Outward: every front normal points away from the head's centre (behind the face).
  head_centre = np.array([0.0, 0.0, mean[:, 2].min() / 2])
  assert np.all(np.sum(n[front] * (centroid[front] - head_centre), axis=1) > 0)
  # Toward the camera (+z): all but slivers on the nostril wings, which really turn sideways.
  assert (n[front, 2] > 0).mean() > 0.999
  assert (n[:, 2] > 0).mean() > 0.98


def test_mean_face_projects_into_crop_with_sensible_landmarks(embedded):
  camera = cam.Camera.for_face_model(embedded, 224)
  v = embedded.shape(embedded.zero_coefficients())
  px = np.asarray(cam.project(v, camera))
  assert px.min() > 0 and px.max() < 224
  lm = px[np.asarray(embedded.landmark_indices)]
  eyes_y = lm[36:48, 1].mean()
  mouth_y = lm[48:68, 1].mean()
  assert eyes_y < lm[30, 1] < mouth_y < lm[8, 1]        # eyes above nose tip above mouth above chin
  assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]  # subject's right eye on the image left
  assert lm[0, 0] < lm[8, 0] < lm[16, 0] and lm[48, 0] < lm[54, 0]
  lm3 = np.asarray(embedded.landmarks_3d(v))
  assert np.argmax(lm3[:, 2]) == 30                     # nose tip is nearest the camera
  # Jaw points are ordered along the contour (monotone x on each side, chin lowest).
  assert np.all(np.diff(lm[0:9, 0]) > 0) and np.all(np.diff(lm[8:17, 0]) > 0)
  assert np.argmax(lm[0:17, 1]) == 8


def test_masks(embedded):
  face = np.asarray(embedded.face_mask)
  skin = np.asarray(embedded.skin_mask)
  assert face.dtype == bool and 0.5 < face.mean() < 1.0
  assert skin.min() >= 0 and skin.max() <= 1 and np.all(skin[~face] == 0)
  lm = np.asarray(embedded.landmark_indices)
  assert skin[lm[62]] < 0.2 and skin[lm[30]] > 0.8     # lips excluded, nose tip is skin


def test_npz_round_trip(embedded, tmp_path):
  path = save_npz(embedded, tmp_path / "m.npz")
  fm = load_face_model(path)
  assert fm.sizes == embedded.sizes and fm.camera == embedded.camera and fm.unit == "mm"
  np.testing.assert_array_equal(np.asarray(fm.triangles), np.asarray(embedded.triangles))
  np.testing.assert_array_equal(np.asarray(fm.symmetry), np.asarray(embedded.symmetry))


# ---- BFM layout ----------------------------------------------------------------------------------

def test_bfm_front_mat_fixture(tmp_path, rng):
  path, d = write_bfm_front_mat(tmp_path / "BFM_model_front.mat", rng)
  fm = load_face_model(path)
  assert fm.sizes == BFM_SIZES and fm.sizes.total == 257
  assert fm.unit_in_mm == 100.0 and fm.camera.distance == 10.0 and fm.camera.focal == 1015.0
  c = random_coeffs(fm.sizes, 2, rng)
  v, a = fm.decode(c)
  nv = d["meanshape"].size // 3
  assert v.shape == (2, nv, 3) and a.shape == (2, nv, 3)
  # Independent formula with Deep3DFaceRecon's conventions: flattened layout, recentring, /255.
  mean = d["meanshape"].reshape(-1, 3).astype(np.float64)
  mean = (mean - mean.mean(0)).reshape(-1)
  ref_v = (mean + np.asarray(c.id) @ d["idBase"].T + np.asarray(c.exp) @ d["exBase"].T)
  np.testing.assert_allclose(np.asarray(v).reshape(2, -1), ref_v, atol=1e-5)
  ref_a = (d["meantex"].reshape(-1) + np.asarray(c.tex) @ d["texBase"].T) / 255.0
  np.testing.assert_allclose(np.asarray(a).reshape(2, -1), ref_a, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(fm.triangles), d["tri"].astype(int) - 1)
  np.testing.assert_array_equal(np.asarray(fm.landmark_indices), d["keypoints"].reshape(-1) - 1)
  assert np.asarray(fm.face_mask).sum() == d["frontmask2_idx"].size
  # 257-d flat vectors in Deep3DFaceRecon's order.
  flat = np.arange(257, dtype=np.float32)
  c = Coefficients.from_flat(jnp.asarray(flat), fm.sizes)
  assert c.id[0] == 0 and c.exp[0] == 80 and c.tex[0] == 144 and c.angle[0] == 224
  assert c.gamma[0] == 227 and c.trans[0] == 254
  np.testing.assert_array_equal(np.asarray(c.to_flat()), flat)


def test_convert_raw_bfm09(tmp_path, rng):
  raw = write_raw_bfm09(tmp_path / "BFM", rng)
  out = convert_bfm2009(tmp_path / "BFM", tmp_path / "bfm.mat")
  m = scipy.io.loadmat(str(out))
  idx_shape = raw["trim"][raw["front"] - 1] - 1
  ev = raw["raw"]["shapeEV"].reshape(-1)
  exp_id = (raw["raw"]["shapePC"][:, :80] * ev[:80]).reshape(-1, 3, 80)[idx_shape].reshape(-1, 80)
  np.testing.assert_allclose(m["idBase"], exp_id / 1e5, rtol=1e-5, atol=1e-9)
  exp_pc = raw["exp_pc"].T * raw["std_exp"][None]
  exp_ex = exp_pc[:, :64].reshape(-1, 3, 64)[raw["front"] - 1].reshape(-1, 64)
  np.testing.assert_allclose(m["exBase"], exp_ex / 1e5, rtol=1e-5, atol=1e-9)
  mean = raw["raw"]["shapeMU"].reshape(-1, 3)[idx_shape].reshape(1, -1) / 1e5
  np.testing.assert_allclose(m["meanshape"], mean, rtol=1e-5)
  assert m["texBase"].shape == (60, 80)
  npz = convert_bfm2009(tmp_path / "BFM", tmp_path / "bfm.npz")
  fm = load_face_model(npz)
  assert fm.sizes == BFM_SIZES and fm.n_vertices == 20 and fm.unit_in_mm == 100.0


def test_exp_pca_bin_reader(tmp_path, rng):
  raw = write_raw_bfm09(tmp_path / "BFM", rng)
  basis = read_exp_pca_bin(tmp_path / "BFM" / "Exp_Pca.bin")
  np.testing.assert_array_equal(basis, raw["exp_pc"].T)
  (tmp_path / "bad.bin").write_bytes(b"\x05\x00\x00\x00" + b"\x00" * 10)
  with pytest.raises(FaceModelError, match="bad.bin"):
    read_exp_pca_bin(tmp_path / "bad.bin")


# ---- bad input -----------------------------------------------------------------------------------

def test_missing_file_names_the_path(tmp_path):
  with pytest.raises(FaceModelError, match="nope.mat: face model file not found"):
    load_face_model(tmp_path / "nope.mat")


def test_mat_with_missing_keys(tmp_path, rng):
  path, d = write_bfm_front_mat(tmp_path / "x.mat", rng)
  del d["idBase"], d["keypoints"]
  scipy.io.savemat(str(path), d)
  with pytest.raises(FaceModelError, match=r"x.mat: BFM .mat lacks keys \['idBase', 'keypoints'\]"):
    load_face_model(path)


def test_corrupt_files(tmp_path):
  (tmp_path / "c.mat").write_bytes(b"not a mat file at all")
  with pytest.raises(FaceModelError, match="c.mat: not a readable MATLAB"):
    load_face_model(tmp_path / "c.mat")
  (tmp_path / "c.npz").write_bytes(b"garbage")
  with pytest.raises(FaceModelError, match="c.npz: not a readable .npz"):
    load_face_model(tmp_path / "c.npz")
  with pytest.raises(FaceModelError, match="unknown face model format"):
    (tmp_path / "m.obj").write_text("v 0 0 0")
    load_face_model(tmp_path / "m.obj")


def test_raw_bfm_missing_files(tmp_path):
  (tmp_path / "BFM").mkdir()
  with pytest.raises(FaceModelError, match="missing .*01_MorphableModel.mat"):
    convert_bfm2009(tmp_path / "BFM", tmp_path / "o.npz")


def test_wrong_coefficient_sizes(embedded):
  with pytest.raises(CoefficientError, match="pred: flat coefficient vector has length 257, "
                                             "the face model expects 110"):
    Coefficients.from_flat(jnp.zeros((2, 257)), embedded.sizes, name="pred")
  bad = Coefficients.zeros(BFM_SIZES, (1,))
  with pytest.raises(CoefficientError, match=r"pred: 'id' has shape \(1, 80\), expected \[..., 63\]"):
    validate_coefficients(bad, embedded.sizes, name="pred")


def test_nan_coefficients(embedded):
  c = embedded.zero_coefficients((2,))
  c = c.replace(exp=c.exp.at[1, 2].set(jnp.nan))
  with pytest.raises(CoefficientError, match="face.npz: 'exp' contains NaN"):
    validate_coefficients(c, embedded.sizes, name="face.npz")
