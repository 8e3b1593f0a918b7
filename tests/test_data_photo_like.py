"""Photo-like synthetic faces (scenes, head, occluders, camera artefacts) and detector-like framing:
every option renders, landmarks and masks stay those of the face, the framing noise is what was fit."""
import dataclasses

import ml_collections
import numpy as np
import pytest

from configs.errors import ConfigError
from configs.quickstart import get_config as quickstart_config
from data_pipelines import detector_framing, photo_like, synthetic
from data_pipelines.alignment import AlignTransform, fit_alignment, reference_five_points
from data_pipelines.landmarks import five_points
from msma_jax import camera as cam
from msma_jax.train.config_checks import check_config

SIZE = 96


@pytest.fixture(scope="module")
def camera(embedded):
  return cam.Camera.for_face_model(embedded, SIZE)


def test_pink_noise_has_the_asked_spectrum_slope():
  field = photo_like.pink_noise(np.random.default_rng(0), 128, 1, exponent=1.0)[..., 0]
  amp = np.abs(np.fft.rfft2(field))
  fy = np.fft.fftfreq(128)[:, None]
  fx = np.fft.rfftfreq(128)[None, :]
  f = np.sqrt(fx ** 2 + fy ** 2)
  band = (f > 0.02) & (f < 0.4)
  slope = np.polyfit(np.log(f[band]), np.log(amp[band]), 1)[0]
  assert abs(slope + 1.0) < 0.05, slope
  assert abs(field.mean()) < 1e-6 and abs(field.std() - 1) < 1e-4


OPTIONS = {
    "natural": dict(backgrounds="natural"),
    "mixed+head": dict(backgrounds="mixed", head=True),
    "occluders": dict(occluder_prob=1.0),
    "artefacts": dict(camera_artefacts=True),
    "detector framing": dict(framing="detector"),
    "wide light": dict(light_scale=2.0),
    "all": dict(backgrounds="mixed", head=True, occluder_prob=0.5, camera_artefacts=True,
                framing="detector", light_scale=1.5),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_renders_with_the_faces_own_landmarks(embedded, camera, name):
  options = synthetic.SyntheticOptions(max_yaw_deg=40, **OPTIONS[name])
  noise = detector_framing.load_calibration("embedded")
  flat, image, mask, lm = synthetic.make_faces(embedded, np.random.default_rng(1), 4, camera,
                                               options, noise)
  assert image.shape == (4, SIZE, SIZE, 3) and image.dtype == np.float32
  assert mask.shape == (4, SIZE, SIZE) and lm.shape == (4, 68, 2)
  assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
  assert mask.min() >= 0 and mask.max() <= 1 and (mask.reshape(4, -1).max(1) > 0.99).all()
  # the landmarks are those of the coefficients returned, seen by this camera
  np.testing.assert_allclose(lm, synthetic.project_landmarks(embedded, flat, camera), atol=1e-3)
  # and the face is where they say: a clean render of the same coefficients agrees with the mask
  _, clean_mask, _ = synthetic.render_batch(embedded, flat, camera, np.zeros_like(image))
  assert (mask <= clean_mask + 1e-5).all()       # occluders only ever take pixels away
  if not options.occluder_prob:
    np.testing.assert_allclose(mask, clean_mask, atol=1e-6)


def test_context_stays_behind_the_face(embedded, camera):
  """Scenes and the head are drawn behind: inside the face the pixels are the face render's."""
  options = synthetic.SyntheticOptions(backgrounds="natural", head=True)
  flat, image, mask, _ = synthetic.make_faces(embedded, np.random.default_rng(2), 4, camera, options)
  face, _, _ = synthetic.render_batch(embedded, flat, camera, np.zeros_like(image))
  inside = mask > 0.999
  np.testing.assert_allclose(image[inside], np.clip(face, 0, 1)[inside], atol=1e-5)
  # and outside it something was drawn: hair above the brows differs from the bare scene
  assert np.abs(image[~inside] - face[~inside]).mean() > 0.05


def test_occluder_changes_only_the_pixels_it_takes_from_the_mask(embedded, camera):
  flat, image, mask, lm = synthetic.make_faces(
      embedded, np.random.default_rng(3), 2, camera, synthetic.SyntheticOptions())
  img, m = photo_like.occlude(image[0], mask[0], lm[0], np.random.default_rng(0))
  changed = np.abs(img - image[0]).max(-1) > 1e-6
  lost = mask[0] - m > 1e-6
  assert lost.sum() > 20
  # every changed face pixel left the mask; pixels changed outside the face are fine
  assert not (changed & (mask[0] > 0.999) & ~lost).any()


def test_camera_artefacts_are_seeded_and_stay_in_range():
  img = photo_like.natural_backgrounds(np.random.default_rng(0), 1, 64)[0]
  outs = [photo_like.camera_artefacts(img, np.random.default_rng(s)) for s in range(8)]
  again = photo_like.camera_artefacts(img, np.random.default_rng(3))
  np.testing.assert_array_equal(outs[3], again)
  for o in outs:
    assert o.shape == img.shape and o.dtype == np.float32 and o.min() >= 0 and o.max() <= 1
  assert max(np.abs(o - img).mean() for o in outs) > 0.005


def test_relative_framing_recovers_a_known_scale_and_shift():
  true = AlignTransform(0.8, (12.0, -5.0), 224)
  r, d = 0.93, np.array([3.0, -2.0])
  # crop_det = r (crop_true - c) + c + d, written as image -> crop_det
  c = 112.0
  det = AlignTransform(true.scale * r, tuple(r * np.array(true.translation) + (1 - r) * c + d), 224)
  v = detector_framing.relative_framing(true, det)
  np.testing.assert_allclose(v, [np.log(r), d[0] / 224, d[1] / 224], atol=1e-12)


def test_framing_noise_fit_recovers_weights_and_covariance():
  rng = np.random.default_rng(0)
  yaw = rng.uniform(-0.8, 0.8, 4000)
  w = np.array([[-0.05, 0.0, 0.01], [0.0, 0.01, 0.0], [-0.02, 0.0, 0.01]])
  cov = np.diag([0.04, 0.006, 0.012]) ** 2
  v = detector_framing.yaw_features(yaw) @ w + rng.multivariate_normal(np.zeros(3), cov, 4000)
  v[:40] += 0.5                                   # the detector's failures: removed as outliers
  fit = detector_framing.FramingNoise.fit(v, yaw)
  np.testing.assert_allclose(fit.weights, w, atol=0.004)
  np.testing.assert_allclose(np.sqrt(np.diag(fit.cov)), np.sqrt(np.diag(cov)), rtol=0.08)
  scale, shift = fit.sample(np.random.default_rng(1), np.zeros(5000), 224)
  np.testing.assert_allclose(np.log(scale).mean(), -0.05, atol=0.003)
  np.testing.assert_allclose(shift.mean(0), [0.0, 0.01 * 224], atol=0.2)
  again = detector_framing.FramingNoise.from_dict(fit.to_dict())
  np.testing.assert_allclose(again.weights, fit.weights, atol=1e-6)


def test_frame_faces_puts_the_five_points_where_asked(embedded, camera):
  flat = synthetic.sample_coefficients(embedded, np.random.default_rng(4), 3)
  scale, shift = np.array([0.9, 1.0, 1.1]), np.array([[3.0, -2.0], [0.0, 0.0], [-4.0, 1.0]])
  framed = synthetic.frame_faces(embedded, flat, camera, scale, shift)
  p5 = five_points(synthetic.project_landmarks(embedded, framed, camera))
  ref = reference_five_points(embedded, SIZE)
  c = np.array(camera.principal)
  for i in range(3):
    t = fit_alignment(p5[i], (ref - c) * scale[i] + c + shift[i], SIZE)
    assert abs(t.scale - 1) < 2e-3 and np.abs(t.translation).max() < 0.2, (i, t)


def test_calibration_entries_exist_and_unknown_models_are_named():
  for name in ("embedded", "embedded-ict"):
    noise = detector_framing.load_calibration(name)
    assert np.all(np.linalg.eigvalsh(noise.cov) > 0)
    assert abs(noise.weights[0, 0]) < 0.2          # a few % of scale, not a broken fit
  with pytest.raises(ValueError, match="BFM_model_front.mat"):
    detector_framing.load_calibration("BFM_model_front.mat")


@pytest.mark.parametrize("change, message", [
    ({"data.synthetic.framing": "dlib"}, "config.data.synthetic.framing must be one of"),
    ({"data.synthetic.backgrounds": "photos"}, "config.data.synthetic.backgrounds"),
    ({"data.synthetic.occluder_prob": 1.5}, "occluder_prob must be <= 1"),
    ({"data.synthetic.bg_blur": 1.0}, "config.data.synthetic.bg_blur: unknown key"),
    ({"data.augment.enabled": True, "data.augment.flip_prob": 0.5},
     "config.data.augment.flip_prob: a flipped crop"),
])
def test_synthetic_config_errors_name_the_key(change, message):
  config = quickstart_config()
  with config.unlocked():
    for key, value in change.items():
      section, *rest = key.split(".")
      node = config[section]
      for k in rest[:-1]:
        node = node[k]
      node[rest[-1]] = value
  with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
    check_config(config)


def test_quickstart_config_is_valid_and_its_synthetic_keys_are_options():
  config = quickstart_config()
  check_config(config)
  s = config.data.synthetic
  # plain faces framed by their landmarks: measured best on real photos (BENCHMARKS.md)
  assert s.framing == "true" and not config.data.augment.enabled
  fields = {f.name for f in dataclasses.fields(synthetic.SyntheticOptions)}
  assert set(ml_collections.ConfigDict(s).keys()) - {"num_examples", "seed"} <= fields
