"""Driving `msma-jax` in subprocesses over generated corpora of bad inputs (tests/test_bad_inputs_*).

`run_cli(*argv)` runs one command in a fresh interpreter (the real exit status and stderr; a hang
fails on `timeout`). `run_many(cases)` runs many short command lines through `msma_jax.cli.main` in
ONE fresh interpreter, each with its own captured stderr, so a table of argument errors costs one
interpreter start instead of one per case. Both report an escaped exception as a traceback in stderr.

Faces without dlib: `face_photo(folder, name)` writes a plain 224x224 photo and a `.txt` landmark
file with the embedded model's mean-face landmarks (project pixels), which reconstruct and
prepare-data align without detecting anything.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent

_DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys, traceback
    from msma_jax.cli import main
    cases = json.loads(open(sys.argv[1]).read())
    results = []
    for argv in cases:
      err = io.StringIO()
      with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
          rc = main(argv)
        except SystemExit as e:
          rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
          traceback.print_exc()
          rc = "escaped"
      results.append({"rc": rc, "stderr": err.getvalue()})
    open(sys.argv[2], "w").write(json.dumps(results))
""")


def _env() -> dict:
  env = dict(os.environ)
  env.pop("MSMA_JAX_TRACEBACK", None)     # the one-line answers are what is tested
  env["JAX_PLATFORMS"] = "cpu"
  return env


def run_cli(*argv, timeout: float = 180, **popen) -> subprocess.CompletedProcess:
  """`python -m msma_jax.cli ARGV...` in a fresh interpreter (cwd: the repository)."""
  return subprocess.run([sys.executable, "-m", "msma_jax.cli", *map(str, argv)],
                        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=_env(),
                        **popen)


def start_cli(*argv, **popen) -> subprocess.Popen:
  """Like run_cli, running in the background (for signal tests; `start_new_session=True` gives it
  a process group of its own, to signal as a terminal's Ctrl-C does)."""
  return subprocess.Popen([sys.executable, "-m", "msma_jax.cli", *map(str, argv)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                          env=_env(), **popen)


def run_many(cases: list[list], tmp_path: pathlib.Path, timeout: float = 300) -> list[dict]:
  """Runs each argv of `cases` through `main()` in one fresh interpreter -> [{rc, stderr}]."""
  src, dst = tmp_path / "_cases.json", tmp_path / "_results.json"
  src.write_text(json.dumps([[str(a) for a in argv] for argv in cases]))
  r = subprocess.run([sys.executable, "-c", _DRIVER, str(src), str(dst)], capture_output=True,
                     text=True, timeout=timeout, cwd=REPO, env=_env())
  assert r.returncode == 0 and dst.is_file(), r.stderr[-3000:]
  return json.loads(dst.read_text())


def lines(text: str) -> list[str]:
  return [l for l in text.splitlines() if l.strip()]


def assert_one_line(rc, stderr: str, status: int, *needles: str) -> str:
  """The answer to a rejected input: exit `status`, stderr exactly one line without a traceback,
  holding every needle. Returns the line."""
  got = lines(stderr)
  assert "Traceback" not in stderr, stderr[-3000:]
  assert len(got) == 1, stderr[-3000:]
  assert rc == status, (rc, got[0])
  for n in needles:
    assert n in got[0], (n, got[0])
  return got[0]


def mean_face_landmarks(size: int = 224) -> np.ndarray:
  """[68, 2] the embedded model's mean-face landmarks in a size x size crop (project pixels)."""
  from msma_jax import camera as cam
  from msma_jax.face_model import load_face_model
  fm = load_face_model("embedded")
  lm3d = np.asarray(fm.landmarks_3d(fm.mean_shape), np.float64)
  c = cam.Camera.for_face_model(fm, size)
  depth = c.distance - lm3d[:, 2]
  return np.stack([c.principal[0] + c.focal * lm3d[:, 0] / depth,
                   c.principal[1] - c.focal * lm3d[:, 1] / depth], -1)


def write_photo(path: pathlib.Path, size: int = 224) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  yy, xx = np.mgrid[:size, :size]
  rgb = np.stack([(xx * 255 // size), (yy * 255 // size), np.full_like(xx, 140)], -1)
  Image.fromarray(rgb.astype(np.uint8)).save(path)
  return path


def write_points(path: pathlib.Path, points: np.ndarray) -> pathlib.Path:
  """A `.txt` landmark file (0-based pixel indices, so the project's +0.5 is taken off)."""
  np.savetxt(path, np.asarray(points, np.float64).reshape(-1, 2) - 0.5, fmt="%.3f")
  return path


def face_photo(folder: pathlib.Path, name: str, points: np.ndarray | None = None) -> pathlib.Path:
  """`folder/name.png` with a landmark file `name.txt` (default: the mean face's 68 points)."""
  photo = write_photo(folder / f"{name}.png")
  write_points(folder / f"{name}.txt", mean_face_landmarks() if points is None else points)
  return photo


# Landmark files that must be rejected (reason "bad landmark file"): name -> points.
def bad_landmark_sets() -> dict[str, np.ndarray]:
  lm = mean_face_landmarks()
  five = np.array([[80.0, 100], [140, 100], [112, 130], [90, 160], [134, 160]])
  return {
      "far_outside": lm * 3 + 5000,                      # another picture's coordinates
      "five_identical": np.full((5, 2), 100.0),          # the face would collapse to a dot
      "five_coincident_eyes": np.concatenate([five[:1], five[:1], five[2:]]),
      "five_collinear": np.stack([np.linspace(60, 160, 5), np.linspace(60, 160, 5)], -1),
      "all68_identical": np.full((68, 2), 100.0),
  }


def make_fifo(path: pathlib.Path) -> pathlib.Path:
  """A FIFO (reading it blocks until a writer comes: nothing may open it)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  os.mkfifo(path)
  return path
