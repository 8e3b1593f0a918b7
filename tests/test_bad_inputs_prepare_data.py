"""`msma-jax prepare-data` over a generated corpus of bad inputs, in subprocesses: argument errors
are one line naming the option (exit 2, nothing written); bad photos and landmark files are one
line each on stdout and never enter the dataset; skipped photos make the status 1 unless
--max-failures allows them; a FIFO does not hang the run; a truncated record file is named; Ctrl-C
ends the run with one line, exit 130 and a summary marked interrupted, and the dataset an
interrupted --overwrite was replacing is kept."""
import json
import os
import signal
import time

import pytest
from cli_corpus import (assert_one_line, bad_landmark_sets, face_photo, lines, make_fifo,
                        run_cli, run_many, start_cli)

ARGUMENT_CASES = {
    "min_side_negative": (["--min-side", "-1"], "--min-side must be >= 1, got -1"),
    "jpeg_quality_500": (["--jpeg-quality", "500"], "--jpeg-quality must be in [1, 100], got 500"),
    "workers_negative": (["--workers", "-1"], "--workers must be in [0, 256], got -1"),
    "max_faces_negative": (["--max-faces", "-2"], "--max-faces must be >= 0, got -2"),
    "upsample_9": (["--upsample", "9"], "--upsample must be in [0, 4], got 9"),
    "sheet_count_negative": (["--sheet-count", "-1"], "--sheet-count must be >= 1, got -1"),
    "sheet_columns_0": (["--sheet-columns", "0"], "--sheet-columns must be >= 1, got 0"),
    "max_failures_negative": (["--max-failures", "-1"], "--max-failures must be >= 0, got -1"),
    "layout_unknown": (["--layout", "coco"], "argument --layout: invalid choice: 'coco'"),
    "min_side_text": (["--min-side", "big"], "argument --min-side: invalid int value: 'big'"),
    "sheet_is_folder": (["--contact-sheet", "{tmp}"], "--contact-sheet {tmp}: is a folder"),
    "sheet_unknown_type": (["--contact-sheet", "{tmp}/s.xyz"], "unknown file type '.xyz'"),
    "sheet_inside_source": (["--contact-sheet", "{src}/sheet.png"], "lies inside SOURCE"),
}
SYNTHETIC_CASES = {
    "max_yaw_nan": (["--max-yaw", "nan"], "--max-yaw must be a finite number, got nan"),
    "max_pitch_inf": (["--max-pitch", "inf"], "--max-pitch must be a finite number, got inf"),
    "max_roll_200": (["--max-roll", "200"], "--max-roll must be in [0, 90], got 200"),
    "synthetic_negative": (["--synthetic", "-3"], "--synthetic must be >= 0, got -3"),
    "out_is_a_file": (["--out", "{tmp}/afile"], "--out {tmp}/afile: is a file, not a folder"),
}


def test_argument_errors_are_one_line_naming_the_option(tmp_path):
  (tmp_path / "afile").write_text("x")
  src = tmp_path / "photos"
  face_photo(src, "good")
  fmt = lambda args: [a.format(tmp=tmp_path, src=src) for a in args]
  cases, wants = [], []
  for args, want in ARGUMENT_CASES.values():
    cases.append(["prepare-data", src, "--out", tmp_path / "data", *fmt(args)])
    wants.append(want.format(tmp=tmp_path, src=src))
  for args, want in SYNTHETIC_CASES.values():
    cases.append(["prepare-data", "--synthetic", "2", "--out", tmp_path / "data", *fmt(args)])
    wants.append(want.format(tmp=tmp_path))
  for source, want in ((None, "give a SOURCE folder of photos, or --synthetic N"),
                       (tmp_path / "missing", "missing: source folder not found"),
                       (tmp_path / "afile", "afile: the source folder is a file")):
    cases.append(["prepare-data", *([source] if source else []), "--out", tmp_path / "data"])
    wants.append(want)
  for r, want in zip(run_many(cases, tmp_path), wants):
    assert_one_line(r["rc"], r["stderr"], 2, want)
  assert not (tmp_path / "data").exists()      # rejected before any work


def test_bad_photos_are_skipped_one_line_each_and_set_the_status(tmp_path):
  src = tmp_path / "photos"
  face_photo(src, "good")
  expected = {}
  for name, points in bad_landmark_sets().items():
    face_photo(src, name, points)
    expected[name] = f"{name}.txt: "
  make_fifo(src / "fifo.jpg")            # would block the run forever if opened
  expected["fifo"] = "fifo.jpg: is a FIFO, not a regular file (not opened)"
  (src / "empty.png").write_bytes(b"")
  expected["empty"] = "empty.png: empty file"
  out = tmp_path / "data"
  r = run_cli("prepare-data", src, "--out", out, "--no-progress", timeout=240)
  assert_one_line(r.returncode, r.stderr, 1, f"{len(expected)} of {len(expected) + 1} photos "
                  "skipped (more than --max-failures 0)")
  skipped = [l for l in lines(r.stdout) if l.strip().startswith("skipped: ")]
  assert len(skipped) == len(expected), r.stdout
  for name, needle in expected.items():
    assert sum(needle in l for l in skipped) == 1, (name, skipped)
  summary = json.loads(next(out.glob("msma_face_images/*/prepare_summary.json")).read_text())
  assert summary["skipped"]["bad_landmarks"] == len(bad_landmark_sets())
  assert summary["skipped"]["unreadable"] == 2 and summary["faces"] == 1

  from data_pipelines.tfds_builders import load_prepared
  records = load_prepared(out)
  assert [records[i]["key"] for i in range(len(records))] == [b"good.png"]

  # Tolerated failures: exit 0. A record file cut short afterwards: one line naming it.
  r = run_cli("prepare-data", src, "--out", out, "--overwrite", "--max-failures", len(expected),
              "--no-progress", timeout=240)
  assert r.returncode == 0 and not lines(r.stderr), r.stderr[-3000:]
  record_file = next(out.glob("msma_face_images/*/*.array_record*"))
  record_file.write_bytes(record_file.read_bytes()[:1000])
  r = run_cli("prepare-data", src, "--out", out, "--no-progress", timeout=240)
  assert_one_line(r.returncode, r.stderr, 2, str(record_file), "damaged record file",
                  "--overwrite")


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_stops_with_one_line_and_an_interrupted_summary(tmp_path, workers):
  """With workers, Ctrl-C reaches the whole process group (as from a terminal): still one line,
  no worker tracebacks, and the photos not started are dropped rather than processed first."""
  src = tmp_path / "photos"
  face_photo(src, "p000")
  for i in range(1, 400):                # links: a long run that costs no disk
    for suffix in (".png", ".txt"):
      (src / f"p{i:03d}{suffix}").symlink_to(src / f"p000{suffix}")
  out = tmp_path / "data"
  face_photo(tmp_path / "one", "only")           # the dataset an interrupted --overwrite must keep
  assert run_cli("prepare-data", tmp_path / "one", "--out", out, "--no-progress").returncode == 0
  proc = start_cli("prepare-data", src, "--out", out, "--overwrite", "--workers", workers,
                   "--no-progress", start_new_session=True)
  deadline = time.time() + 120
  # TFDS writes into an `incomplete.*` folder while it runs: the run is under way.
  while not list(out.glob("*/incomplete*")) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  time.sleep(0.3)
  os.killpg(proc.pid, signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert_one_line(proc.returncode, err, 130, "msma-jax prepare-data: interrupted (Ctrl-C)",
                  "no dataset written")
  summary = json.loads((out / "prepare_summary.json").read_text())
  assert summary["interrupted"] is True and summary["dataset"] is None
  # How many photos were read before the signal depends on the machine's load (the first may
  # still be in the detector); what is pinned is that the run stopped short of the rest.
  assert summary["images"] < 400
  from data_pipelines.tfds_builders import load_prepared
  kept = load_prepared(out)
  assert [kept[i]["key"] for i in range(len(kept))] == [b"only.png"]
