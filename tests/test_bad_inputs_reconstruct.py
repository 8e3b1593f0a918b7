"""`msma-jax reconstruct` over a generated corpus of bad inputs, in subprocesses: every argument
error is one line naming the option (exit 2, before any work); every bad input is one line naming
the file and counted (exit 1, or 0 within --max-failures); nothing hangs; signals end a run with
one line, exit 143/130 and a summary that says so; a damaged checkpoint is one line naming it."""
import json
import signal
import time

import numpy as np
import pytest
from cli_corpus import (assert_one_line, bad_landmark_sets, face_photo, lines, make_fifo,
                        run_cli, run_many, start_cli, write_photo)

FAST = ["--fit-steps", "0", "--landmark-steps", "0", "--no-progress"]

# (extra arguments, what the one line must say)
ARGUMENT_CASES = {
    "batch_size_0": (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    "batch_size_text": (["--batch-size", "abc"], "argument --batch-size: invalid int value"),
    "texture_size_0": (["--texture-size", "0"], "--texture-size must be in [16, 8192], got 0"),
    "sheet_count_negative": (["--sheet-count", "-1"], "--sheet-count must be >= 1, got -1"),
    "min_score_nan": (["--min-score", "nan"], "--min-score must be a finite number, got nan"),
    "min_score_inf": (["--min-score", "inf"], "--min-score must be a finite number, got inf"),
    "every_0": (["--every", "0"], "--every must be >= 1, got 0"),
    "fit_steps_negative": (["--fit-steps", "-5"], "--fit-steps must be >= 0, got -5"),
    "fit_size_0": (["--fit-size", "0"], "--fit-size must be in [32, 4096], got 0"),
    "max_faces_negative": (["--max-faces", "-1"], "--max-faces must be >= 0, got -1"),
    "max_failures_negative": (["--max-failures", "-1"], "--max-failures must be >= 0, got -1"),
    "upsample_unknown": (["--upsample", "7"], "argument --upsample: invalid choice: '7'"),
    "unknown_option": (["--bogus"], "unrecognized arguments: --bogus"),
    "sheet_is_folder": (["--sheet", "{tmp}"], "--sheet {tmp}: is a folder"),
    "sheet_unknown_type": (["--sheet", "{tmp}/s.gif"], "unknown file type '.gif'"),
    "sheet_under_a_file": (["--sheet", "{tmp}/afile/s.png"], "which is a file"),
}


def test_argument_errors_are_one_line_naming_the_option(tmp_path):
  (tmp_path / "afile").write_text("x")
  photo = write_photo(tmp_path / "p.png")
  names = list(ARGUMENT_CASES)
  cases = [["reconstruct", photo, "--out", tmp_path / "out",
            *[a.format(tmp=tmp_path) for a in ARGUMENT_CASES[n][0]]] for n in names]
  cases.append(["reconstruct", photo, "--out", tmp_path / "afile"])
  cases.append(["reconstruct", "--out", tmp_path / "out"])
  results = run_many(cases, tmp_path)
  for name, r in zip(names, results):
    assert_one_line(r["rc"], r["stderr"], 2, ARGUMENT_CASES[name][1].format(tmp=tmp_path))
  assert_one_line(results[-2]["rc"], results[-2]["stderr"], 2, f"--out {tmp_path / 'afile'}: is a "
                  "file, not a folder")
  assert_one_line(results[-1]["rc"], results[-1]["stderr"], 2, "the following arguments are "
                  "required: INPUT")
  assert not (tmp_path / "out").exists()      # rejected before any work


def _corpus(src):
  """One good face and one of each bad file class; returns {name: (reason, needle)}."""
  face_photo(src, "good")
  expected = {}
  for name, points in bad_landmark_sets().items():
    face_photo(src, name, points)
    expected[name] = ("bad_landmarks", f"{name}.txt: ")
  face_photo(src, "thirty_points", np.zeros((30, 2)) + 50)
  expected["thirty_points"] = ("bad_landmarks", "has 30 points")
  make_fifo(src / "fifo.jpg")
  expected["fifo"] = ("unreadable", "fifo.jpg: is a FIFO, not a regular file (not opened)")
  (src / "empty.jpg").write_bytes(b"")
  expected["empty"] = ("unreadable", "empty.jpg: empty file")
  (src / "random.png").write_bytes(np.random.default_rng(0).bytes(3000))
  expected["random"] = ("unreadable", "random.png: ")
  return expected


def test_bad_files_one_line_each_no_hang_and_out_inside_input(tmp_path):
  src = tmp_path / "in"
  expected = _corpus(src)
  out = src / "out"          # inside the input folder: its outputs must never become inputs
  write_photo(out / "earlier_run_overlay.png")          # what a previous run left there
  r = run_cli("reconstruct", src, "--out", out, "--save", "npz,overlay", *FAST, timeout=240)
  err = lines(r.stderr)
  assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr[-3000:]
  assert len(err) == len(expected), err              # one line per bad input, nothing else
  for name, (_, needle) in expected.items():
    assert sum(needle in l for l in err) == 1, (name, err)
  summary = json.loads((out / "summary.json").read_text())
  reasons = {}
  for reason, _ in expected.values():
    reasons[reason] = reasons.get(reason, 0) + 1
  assert summary["failed"] == reasons
  assert summary["pictures"] == len(expected) + 1 and summary["pictures_done"] == 1
  assert summary["interrupted"] is None
  assert (out / "good_face0.npz").is_file() and list(out.glob("good_face0*.png"))


@pytest.mark.parametrize("max_failures,status", [(None, 1), (1, 0)])
def test_fifo_given_by_name_is_reported_not_opened(tmp_path, max_failures, status):
  """Also the batch status: 1 when an input failed, 0 when --max-failures tolerates it."""
  fifo = make_fifo(tmp_path / "x.jpg")
  extra = [] if max_failures is None else ["--max-failures", max_failures]
  r = run_cli("reconstruct", fifo, "--out", tmp_path / "out", *FAST, *extra, timeout=120)
  assert r.returncode == status and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert lines(r.stderr) == [f"skipped: {fifo}: is a FIFO, not a regular file (not opened)"]


def test_sigterm_stops_with_one_line_and_an_interrupted_summary(tmp_path):
  src = tmp_path / "in"
  for i in range(40):
    face_photo(src, f"p{i:02d}")
  out = tmp_path / "out"
  proc = start_cli("reconstruct", src, "--out", out, "--save", "npz", "--batch-size", "1", *FAST)
  deadline = time.time() + 120
  while not list(out.glob("*.npz")) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=60)
  assert_one_line(proc.returncode, err, 143, "msma-jax reconstruct: interrupted (SIGTERM)",
                  "summary.json says interrupted")
  summary = json.loads((out / "summary.json").read_text())
  assert summary["interrupted"] == "SIGTERM"
  done = [d["input"] for d in summary["done"]]
  assert 1 <= len(done) < 40
  # Nothing lost: every picture the summary lists as done has its file.
  for d in summary["done"]:
    for face in d["faces"]:
      assert all((out / f).is_file() for f in face["files"])


@pytest.fixture(scope="module")
def damaged_checkpoints(tmp_path_factory):
  """A valid encoder run, and copies with a truncated tensor file / garbage metadata."""
  import shutil

  from test_reconstruct import save_checkpoint
  root = tmp_path_factory.mktemp("ckpt")
  good = save_checkpoint(root / "good")
  step = lambda run: run / "checkpoints" / "latest" / "1"
  runs = {}
  runs["truncated"] = shutil.copytree(good, root / "truncated")
  for f in (step(runs["truncated"]) / "params").rglob("*"):
    if f.is_file() and f.stat().st_size > 1024:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  runs["meta"] = shutil.copytree(good, root / "meta")
  for f in (step(runs["meta"]) / "meta").rglob("*"):
    if f.is_file():
      f.write_text("garbage")
  runs["no_step"] = shutil.copytree(good, root / "no_step")
  shutil.rmtree(step(runs["no_step"]))
  return runs, step


@pytest.mark.parametrize("damage,needle", [("truncated", "params: damaged or incomplete checkpoint"),
                                           ("meta", "meta: unreadable checkpoint metadata"),
                                           ("no_step", "no msma-jax checkpoint here")])
def test_damaged_checkpoint_is_one_line_naming_it(damaged_checkpoints, tmp_path, damage, needle):
  runs, _ = damaged_checkpoints
  face_photo(tmp_path / "in", "good")
  r = run_cli("reconstruct", tmp_path / "in", "--out", tmp_path / "out", "--checkpoint",
              runs[damage], "--no-progress", timeout=240)
  assert_one_line(r.returncode, r.stderr, 2, str(runs[damage]), needle)
