"""The embedded ICT face model ("embedded-ict"): asset facts, geometry against the ICT source files
(skipped where they are absent), orientation conventions, landmarks, masks, albedo, and decode /
render / fit / one training step end to end."""
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msma_jax import camera as cam
from msma_jax.face_model import (Coefficients, CoefficientSizes, FaceModelError,
                                 available_face_models, face_model_license, load_face_model)
from msma_jax.inference.demo import random_coefficients
from msma_jax.lighting import face_normals
from msma_jax.render import render_face

ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSET = ROOT / "msma_jax" / "assets" / "ict_face_model.npz"
# The ICT Face Model Light source (cm), where the project's shared folder sits beside the checkout.
SOURCE = ROOT.parent / "shared" / "assets" / "ict"
# iBUG-68 landmarks (0-based ICT vertex numbers): ICT's idx_to_landmark_verts with the jaw points
# 0-7 and 9-16 from ICT-FaceKit's alternative jawline.
LANDMARKS = [1278, 1272, 12, 1834, 243, 781, 2199, 1447, 966, 3661, 4390, 3022, 2484, 4036, 2253,
             3490, 3496, 268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942,
             4857, 1140, 2075, 1147, 4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751,
             3756, 3721, 3725, 3732, 5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957,
             5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966]
BASIS_ROUNDING_MM = 0.005 + 1e-4       # fixed-point step 0.01 mm, plus float32 decode


@pytest.fixture(scope="module")
def ict():
  return load_face_model("embedded-ict")


@pytest.fixture(scope="module")
def asset():
  with np.load(ASSET) as z:
    return {k: z[k] for k in z.files}


def unit_coeffs(fm, field, k, value=1.0):
  c = fm.zero_coefficients()
  return c.replace(**{field: getattr(c, field).at[k].set(value)})


# ---- the asset ------------------------------------------------------------------------------------

def test_sizes_names_and_licences(ict, asset):
  assert "embedded-ict" in available_face_models() and available_face_models()[0] == "embedded"
  assert load_face_model().name == "embedded"                    # the SFM stays the default
  assert ict.name == "embedded-ict" and ict.unit == "mm" and ict.unit_in_mm == 1.0
  assert ict.n_vertices == 16102 and ict.n_triangles == 31988
  assert ict.sizes == CoefficientSizes(id=100, exp=53, tex=9)
  assert ict.expression_names[:3] == ("browDown_L", "browDown_R", "browInnerUp_L")
  assert ict.expression_names[26] == "jawOpen" and ict.expression_names[-1] == "noseSneer_R"
  assert ict.camera == load_face_model("embedded").camera       # one default camera for both
  assert "MIT" in face_model_license("embedded-ict") and "commercial use allowed" in \
      face_model_license("embedded-ict")
  assert "non-commercial" in face_model_license("embedded")
  assert ASSET.stat().st_size < 6e6                              # bytes
  licence = (ROOT / "msma_jax" / "assets" / "LICENSE-ICT.md").read_text()
  assert "Copyright (c) 2020 USC Institute for Creative Technologies" in licence
  assert "Permission is hereby granted, free of charge" in licence and "Kalle Bladin" in licence
  # Face and head vertices keep their ICT numbers; the rest map to sockets and eyeballs.
  src = asset["source_vertex_index"]
  assert np.array_equal(src[:11248], np.arange(11248)) and src.max() < 24591


def test_fixed_point_bases_decode_to_float32(ict, asset):
  q, step = asset["id_basis_q"], float(asset["id_basis_step"])
  assert q.dtype == np.int16 and q.shape == (100, 16102, 3) and step == pytest.approx(0.01)
  np.testing.assert_array_equal(np.asarray(ict.id_basis[..., 7]), q[7].astype(np.float32) * step)
  assert ict.id_basis.dtype == jnp.float32 and ict.exp_basis.dtype == jnp.float32


def test_fixed_point_without_step_is_an_error(tmp_path, asset):
  bad = {k: v for k, v in asset.items() if k != "exp_basis_step"}
  np.savez(tmp_path / "bad.npz", **bad)
  with pytest.raises(FaceModelError, match="bad.npz: 'exp_basis_q' must be an integer"):
    load_face_model(tmp_path / "bad.npz")


@pytest.mark.skipif(not (SOURCE / "ict_face_model.npz").exists(),
                    reason="ICT source files not beside the checkout (shared/assets/ict)")
def test_geometry_reproduces_the_source(ict, asset):
  with np.load(SOURCE / "ict_face_model.npz") as z:
    neutral, faces = z["neutral"].astype(np.float64), z["faces"]
    id_d = z["identity_deltas"][[0, 1, 57, 99]].astype(np.float64)
    names = [str(s) for s in z["expression_names"]]
    exp_d = z["expression_deltas"][[names.index(n) for n in ("jawOpen", "eyeBlink_L",
                                                              "mouthSmile_R")]].astype(np.float64)
  src, offset = asset["source_vertex_index"], asset["recentre_offset_mm"].astype(np.float64)
  to_model = lambda cm: cm[src] * 10.0 + offset                 # cm, ICT numbering -> model mm
  mean = np.asarray(ict.mean_shape, np.float64)
  np.testing.assert_allclose(mean, to_model(neutral), atol=1e-4)
  for k, d in zip([0, 1, 57, 99], id_d):
    v = np.asarray(ict.shape(unit_coeffs(ict, "id", k)))
    np.testing.assert_allclose(v, to_model(neutral + d), atol=BASIS_ROUNDING_MM)
  for name, d in zip(("jawOpen", "eyeBlink_L", "mouthSmile_R"), exp_d):
    v = np.asarray(ict.shape(unit_coeffs(ict, "exp", ict.expression_names.index(name))))
    np.testing.assert_allclose(v, to_model(neutral + d), atol=BASIS_ROUNDING_MM)
  # A mixture: identity 2 at -1.5 sigma and half a smile, linear in the source offsets.
  c = unit_coeffs(ict, "id", 1, -1.5)
  c = c.replace(exp=c.exp.at[ict.expression_names.index("mouthSmile_R")].set(0.5))
  np.testing.assert_allclose(np.asarray(ict.shape(c)),
                             to_model(neutral - 1.5 * id_d[1] + 0.5 * exp_d[2]), atol=0.012)
  # Every triangle is half of an ICT polygon (a quad split along a diagonal, or an ICT triangle).
  halves = set()
  for p in faces.tolist():
    if p[3] < 0:
      halves.add(tuple(sorted(p[:3])))
    else:
      halves.update(tuple(sorted(p[i] for i in range(4) if i != skip)) for skip in range(4))
  tri_src = np.sort(src[np.asarray(ict.triangles)], axis=1)
  assert all(tuple(t) in halves for t in tri_src.tolist())
  vi = json.loads((SOURCE / "vertex_indices.json").read_text())
  lm_ict = np.asarray(vi["idx_to_landmark_verts"])
  lm = src[np.asarray(ict.landmark_indices)]
  np.testing.assert_array_equal(lm[17:], lm_ict[17:])          # brows, eyes, nose, mouth: ICT's
  assert lm[8] == lm_ict[8] and np.array_equal(asset["landmark_indices_ict"], lm_ict)


def test_identity_modes_are_one_sigma(ict):
  # ICT draws identities as N(0, 1) weights on its targets: column norms fall from 530 mm (rms
  # 4.2 mm per vertex over the 16,102 vertices) to 10 mm; not rescaled here.
  norms = np.linalg.norm(np.asarray(ict.id_basis).reshape(-1, 100), axis=0)
  assert norms[0] == pytest.approx(530.4, abs=0.1) and norms[-1] == pytest.approx(10.0, abs=0.1)
  rms = norms / np.sqrt(ict.n_vertices)
  assert 3.0 < rms[0] < 5.0                                      # the SFM's first mode: 4.0 mm


# ---- orientation and landmarks ----------------------------------------------------------------

def test_landmarks_are_the_ict_vertices(ict):
  np.testing.assert_array_equal(np.asarray(ict.landmark_indices), LANDMARKS)


def test_orientation_conventions(ict):
  camera = cam.Camera.for_face_model(ict, 224)
  v = ict.shape(ict.zero_coefficients())
  mean = np.asarray(v)
  lm3 = mean[LANDMARKS]
  lm = np.asarray(cam.project(v, camera))[LANDMARKS]
  assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1]   # eyes above mouth
  assert lm3[36:42, 0].mean() < 0 < lm3[42:48, 0].mean()         # subject's right eye at -x
  assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0] and lm[48, 0] < lm[54, 0]
  assert np.argmax(lm3[:, 2]) == 30                             # nose tip nearest the camera
  face = np.asarray(ict.face_mask)
  assert np.linalg.norm(mean[face][np.argmax(mean[face, 2])] - lm3[30]) < 5.0   # mm
  assert np.all(np.diff(lm[0:9, 0]) > 0) and np.all(np.diff(lm[8:17, 0]) > 0)
  assert np.argmax(lm[0:17, 1]) == 8
  # Front faces CCW toward +z; one consistent winding over face, head, sockets and eyeballs.
  tri = np.asarray(ict.triangles)
  edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
  assert len(np.unique(edges, axis=0)) == len(edges)
  n = np.asarray(face_normals(v, ict.triangles))
  # Every triangle a frontal camera sees (rasterized without culling) faces it: the face area also
  # holds the lips' inner lining and the nostrils, which turn away and are hidden.
  frags = render_face(ict, jax.tree.map(lambda x: x[None], ict.zero_coefficients()), camera,
                      cull_backfaces=False, antialias=False).fragments
  seen = np.asarray(frags.triangle_id)[0]
  seen = seen[seen >= 0]
  to_camera = np.array([0.0, 0.0, camera.distance]) - mean[tri[seen]].mean(axis=1)
  facing = np.sum(n[seen] * to_camera, axis=1) > 0
  assert seen.size > 30000 and facing.mean() > 0.995               # pixels
  # Outward: the head (face, head and neck, mouth socket) encloses a positive volume, summed as
  # cones from the middle of the open neck (so the missing cap adds nothing): about 5 litres.
  shell = tri[(tri < 13294).all(axis=1)]
  apex = mean[mean[:, 1] < mean[:, 1].min() + 5.0].mean(axis=0)
  a, b, c = (mean[shell[:, k]] - apex for k in range(3))
  volume = np.sum(a * np.cross(b, c)) / 6.0
  assert 4.0e6 < volume < 7.0e6, volume                            # mm³


def test_framing_matches_the_sfm_model(ict, embedded):
  # Re-centred so the mean face's landmarks land where the SFM mean's do under the shared camera.
  px = {}
  for fm in (ict, embedded):
    camera = cam.Camera.for_face_model(fm, 224)
    px[fm.name] = np.asarray(cam.project(fm.landmarks_3d(fm.shape(fm.zero_coefficients())),
                                         camera))
  a, b = px["embedded-ict"], px["embedded"]
  np.testing.assert_allclose(a.mean(axis=0), b.mean(axis=0), atol=0.5)   # pixels
  assert np.linalg.norm(a - a.mean(0), axis=1).mean() == pytest.approx(
      np.linalg.norm(b - b.mean(0), axis=1).mean(), rel=0.04)
  v = np.asarray(ict.shape(ict.zero_coefficients()))
  camera = cam.Camera.for_face_model(ict, 224)
  depth = camera.distance - v[:, 2]
  assert camera.near < depth.min() and depth.max() < camera.far


def test_symmetry(ict):
  sym = np.asarray(ict.symmetry)
  assert np.array_equal(sym[sym], np.arange(ict.n_vertices))
  mean = np.asarray(ict.mean_shape)
  assert np.abs(mean[sym] * np.array([-1, 1, 1]) - mean).max() < 0.1    # mm
  lm = np.asarray(ict.landmark_indices)
  for a, b in [(0, 16), (3, 13), (7, 9), (17, 26), (36, 45), (39, 42), (31, 35), (48, 54),
               (60, 64)]:
    assert sym[lm[a]] == lm[b], (a, b)
  for k in (8, 27, 30, 51, 57, 62, 66):
    assert sym[lm[k]] == lm[k]


# ---- masks and albedo -------------------------------------------------------------------------

def test_masks(ict, asset):
  face, skin = np.asarray(ict.face_mask), np.asarray(ict.skin_mask)
  assert face.dtype == bool and int(face.sum()) == 5470
  assert not face[11248:].any()                                 # no sockets or eyeballs
  assert skin.min() >= 0 and skin.max() <= 1 and np.all(skin[~face] == 0)
  lm = np.asarray(ict.landmark_indices)
  assert skin[lm[62]] < 0.2 and skin[lm[19]] < 0.3 and skin[lm[30]] > 0.8
  labels = asset["vertex_labels"]
  assert np.bincount(labels).tolist() == [11248, 2046, 768, 990, 1050]


def test_albedo(ict, asset, rng):
  a0 = np.asarray(ict.mean_albedo)
  labels = asset["vertex_labels"]
  assert a0.min() >= 0 and a0.max() <= 1
  lum = a0.mean(axis=1)
  lm = np.asarray(ict.landmark_indices)
  assert lum[labels == 3].mean() > 0.7 > 0.15 > lum[labels == 4].mean()     # sclera vs iris
  assert lum[labels == 1].mean() < 0.2                           # dark mouth interior
  top = np.argmax(np.asarray(ict.mean_shape)[:11248, 1])          # crown: hair
  assert lum[top] < 0.2 < 0.45 < lum[lm[30]]                      # hair darker than the nose
  assert a0[lm[62], 0] - a0[lm[62], 1] > a0[lm[30], 0] - a0[lm[30], 1]    # lips redder
  assert ict.sizes.tex == len(asset["albedo_basis_names"]) and asset["albedo_basis_names"][-1] == "hair"
  tex = jnp.asarray(rng.normal(size=(64, 9)), jnp.float32)
  albedo = np.asarray(ict.albedo(Coefficients.zeros(ict.sizes, (64,)).replace(tex=tex)))
  skin = np.asarray(ict.skin_mask) > 0.5
  assert ((albedo[:, skin] >= 0) & (albedo[:, skin] <= 1)).mean() > 0.999


# ---- end to end -------------------------------------------------------------------------------

def test_decode_and_render(ict):
  camera = cam.Camera.for_face_model(ict, 112)
  c = random_coefficients(ict, jax.random.key(0), 2)
  mean = ict.zero_coefficients((1,))
  c = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), mean, c)
  v, a = ict.decode(c)
  assert v.shape == (3, 16102, 3) and a.shape == (3, 16102, 3)
  out = jax.jit(lambda c: render_face(ict, c, camera, background=jnp.ones(3)))(c)
  img, mask = np.asarray(out.image), np.asarray(out.mask)
  assert np.all(np.isfinite(img)) and img.shape == (3, 112, 112, 3)
  # Head and neck fill the crop: more than the SFM face mask's ~45 %.
  assert 0.55 < mask[0].mean() < 0.9
  lm = np.asarray(out.landmarks_2d)
  assert lm.min() > 0 and lm.max() < 112
  # The mean face's eyes render dark iris on white sclera at the pupils (between the eyelids).
  pupil = 0.5 * (lm[0, 37] + lm[0, 40])
  assert img[0, int(pupil[1]), int(pupil[0])].mean() < 0.3


def test_jaw_open_shows_the_mouth_interior_not_the_background(ict):
  camera = cam.Camera.for_face_model(ict, 112)
  c = unit_coeffs(ict, "exp", ict.expression_names.index("jawOpen"))
  c = jax.tree.map(lambda x: x[None], c)
  out = render_face(ict, c, camera, background=jnp.ones(3))
  lm = np.asarray(out.landmarks_2d)[0]
  inner = 0.5 * (lm[62] + lm[66])                                 # between the inner lips
  assert np.linalg.norm(lm[62] - lm[66]) > 5.0                    # pixels: the mouth is open
  assert float(out.mask[0, int(inner[1]), int(inner[0])]) == 1.0
  assert np.asarray(out.image)[0, int(inner[1]), int(inner[0])].mean() < 0.3


def test_fit_recovers_landmarks(ict):
  from configs.fit import get_fit_config
  from msma_jax.inference.fit import fit_coefficients
  camera = cam.Camera.for_face_model(ict, 64)
  truth = random_coefficients(ict, jax.random.key(3), 1, max_yaw_deg=20, max_pitch_deg=8,
                              max_roll_deg=5)
  target = jax.jit(lambda c: render_face(ict, c, camera))(truth)
  batch = {"image": target.image, "landmarks": target.landmarks_2d,
           "skin_mask": jnp.ones(target.mask.shape)}
  init = ict.zero_coefficients((1,))
  before = np.linalg.norm(np.asarray(jax.jit(lambda c: render_face(ict, c, camera))(init)
                                     .landmarks_2d - target.landmarks_2d), axis=-1).mean()
  config = get_fit_config()
  config.landmark_steps, config.steps = 100, 5        # landmarks first; 5 steps cover the render
  fitted, terms = fit_coefficients(ict, init, batch, camera, config)
  out = jax.jit(lambda c: render_face(ict, c, camera))(fitted)
  err = np.linalg.norm(np.asarray(out.landmarks_2d - target.landmarks_2d), axis=-1).mean()
  assert err < 0.5 * before and err < 1.0, (before, err)         # pixels at 64 px
  assert terms["total"].shape == (1,) and np.isfinite(float(terms["total"][0]))


def test_one_training_step(ict):
  from msma_jax.train.mesh import batch_sharding, make_mesh
  from msma_jax.train.state import create_train_state, initial_model
  from msma_jax.train.step import make_train_step
  spec = importlib.util.spec_from_file_location("quickstart_config", ROOT / "configs" / "quickstart.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("r18")                 # the plain ResNet-18: the fastest to compile
  config.face_model = "embedded-ict"
  config.image_size, config.model.fusion.width, config.model.backbone_width = 32, 16, 0.25
  config.data.global_batch_size = 2
  mesh = make_mesh(config.mesh)
  model, _ = initial_model(config, ict, with_init=False)
  ts = create_train_state(config, model, mesh, 10, 10)
  camera = cam.Camera.for_face_model(ict, 32)
  truth = random_coefficients(ict, jax.random.key(1), 2)
  target = render_face(ict, truth, camera)
  batch = {"image": np.asarray(target.image), "landmarks": np.asarray(target.landmarks_2d),
           "skin_mask": np.ones((2, 32, 32), np.float32), "valid": np.ones((2,), np.float32)}
  batch = jax.device_put(batch, batch_sharding(mesh))
  with jax.set_mesh(mesh):
    step = make_train_step(ts, ict, camera, config, mesh)
    state, metrics = step(ts.state, batch)
    state, metrics2 = step(state, batch)
  assert all(np.isfinite(float(v)) for v in jax.tree.leaves(metrics2))
  total = [k for k in metrics if "total" in k][0]
  assert float(metrics[total]) > 0
