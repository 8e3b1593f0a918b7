"""Exports reload with trimesh/scipy; the console script answers --help, info and demo."""
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from msma_jax.face_model import CoefficientError
from msma_jax.inference import load_coefficients, save_coefficients, save_mesh


def test_mesh_round_trip(embedded, tmp_path):
  v = np.asarray(embedded.mean_shape)
  f = np.asarray(embedded.triangles)
  colors = np.clip(np.asarray(embedded.mean_albedo), 0, 1)
  for suffix in (".obj", ".ply"):
    path = save_mesh(tmp_path / f"m{suffix}", v, f, colors)
    m = trimesh.load(path, process=False)
    assert m.vertices.shape == (3448, 3) and m.faces.shape == (6736, 3)
    np.testing.assert_allclose(m.vertices, v, atol=1e-4)
    np.testing.assert_array_equal(m.faces, f)
    np.testing.assert_allclose(m.visual.vertex_colors[:, :3] / 255.0, colors, atol=0.5 / 255 + 1e-6)
  with pytest.raises(ValueError, match="m.stl: mesh format"):
    save_mesh(tmp_path / "m.stl", v, f)


@pytest.mark.parametrize("suffix", [".npz", ".mat"])
def test_coefficient_round_trip(embedded, tmp_path, rng, suffix):
  from msma_jax.face_model import Coefficients
  import jax.numpy as jnp
  c = Coefficients.from_flat(jnp.asarray(rng.normal(size=(embedded.sizes.total,)), jnp.float32),
                             embedded.sizes)
  path = save_coefficients(tmp_path / f"c{suffix}", c, lm68=np.zeros((68, 2)))
  back = load_coefficients(path)
  np.testing.assert_allclose(np.asarray(back.to_flat()).reshape(-1), np.asarray(c.to_flat()),
                             atol=1e-6)
  if suffix == ".mat":
    import scipy.io
    keys = set(scipy.io.loadmat(str(path))) - {"__header__", "__version__", "__globals__"}
    assert keys == {"id", "exp", "tex", "angle", "gamma", "trans", "lm68"}


def test_load_coefficients_errors(tmp_path):
  with pytest.raises(CoefficientError, match="missing.npz: coefficient file not found"):
    load_coefficients(tmp_path / "missing.npz")
  np.savez(tmp_path / "partial.npz", id=np.zeros(3))
  with pytest.raises(CoefficientError, match="partial.npz: missing coefficient groups"):
    load_coefficients(tmp_path / "partial.npz")


def _cli(*args, check=True):
  exe = shutil.which("msma-jax")
  cmd = [exe, *args] if exe else [sys.executable, "-m", "msma_jax.cli", *args]
  return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=600)


def test_cli_help_and_info():
  out = _cli("--help").stdout
  assert "info" in out and "demo" in out and "convert-bfm" in out
  info = _cli("info").stdout
  assert "jax " in info and "embedded" in info and "total 110" in info and "cpu" in info.lower()


def test_cli_demo_writes_pictures_and_meshes(tmp_path):
  _cli("demo", "--out", str(tmp_path), "--num-random", "2")
  for name in ("mean_face", "random_01", "random_02"):
    for ext in (".png", ".obj", ".ply", ".npz", ".mat"):
      assert (tmp_path / f"{name}{ext}").stat().st_size > 0
  import cv2
  img = cv2.imread(str(tmp_path / "mean_face.png"))
  assert img.shape == (224, 224, 3)
  assert (img.reshape(-1, 3) < 250).any(axis=1).mean() > 0.3   # the face covers the crop's middle


def test_cli_bad_face_model_is_one_clear_line(tmp_path):
  r = _cli("demo", "--out", str(tmp_path), "--face-model", str(tmp_path / "x.mat"), check=False)
  assert r.returncode == 2
  assert r.stderr.strip().count("\n") == 0 and "x.mat: face model file not found" in r.stderr
