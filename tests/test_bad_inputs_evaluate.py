"""`msma-jax evaluate` over generated bad inputs, in one subprocess: argument errors name the option
(exit 2); a dataset with nothing usable is exit 2 with the exclusions, never a NaN table; a NoW
image list line that would leave the dataset root is rejected, naming the line."""
import numpy as np
from cli_corpus import assert_one_line, lines, run_many, write_photo


def _nothing_usable_layouts(tmp):
  """Folders in each protocol's layout holding nothing that can be evaluated."""
  aflw = tmp / "aflw"
  write_photo(aflw / "image00001.jpg")                         # no annotation
  write_photo(aflw / "image00002.jpg")
  (aflw / "image00002.mat").write_bytes(b"not a mat file")     # a damaged annotation
  micc = tmp / "micc"
  (micc / "subject_01" / "Model" / "frontal1" / "obj").mkdir(parents=True)   # no scan inside
  now = tmp / "now"
  (now / "scans").mkdir(parents=True)
  (now / "imagepathsvalidation.txt").write_text("FaMoS_180424_03335_TA/selfie/IMG_0092.jpg\n")
  (now / "escape.txt").write_text("FaMoS_1/selfie/a.jpg\n../../etc/passwd\n")
  (now / "absolute.txt").write_text("/etc/passwd\n")
  (tmp / "pred").mkdir()
  return aflw, micc, now


def test_evaluate_bad_inputs_are_one_line(tmp_path):
  (tmp_path / "afile").write_text("x")
  aflw, micc, now = _nothing_usable_layouts(tmp_path)
  out = ["--out", tmp_path / "report", "--no-progress"]
  cases = [
      (["synthetic", "--batch-size", "0", *out], "--batch-size must be >= 1, got 0"),
      (["synthetic", "--per-cell", "0", *out], "--per-cell must be >= 1, got 0"),
      (["aflw2000", aflw, "--limit", "-1", *out], "--limit must be >= 1, got -1"),
      (["aflw2000", aflw, "--limit", "x", *out], "argument --limit: invalid int value: 'x'"),
      (["micc", micc, tmp_path / "pred", "--crop-radius-mm", "nan", *out],
       "--crop-radius-mm must be a finite number, got nan"),
      (["micc", micc, tmp_path / "pred", "--scan-unit-mm", "0", *out],
       "--scan-unit-mm must be > 0, got 0"),
      (["micc", micc, tmp_path / "pred", "--recon-unit-mm=-inf", *out],
       "--recon-unit-mm must be a finite number, got -inf"),
      (["now", now, tmp_path / "pred", "--scan-unit-mm", "-2", *out],
       "--scan-unit-mm must be > 0, got -2"),
      (["aflw2000", aflw, "--out", tmp_path / "afile"], "--out " + str(tmp_path / "afile") +
       ": is a file, not a folder"),
      (["aflw2000", tmp_path / "missing", *out], "missing: AFLW2000-3D folder not found"),
      (["aflw2000", aflw, "--predictor", "no_such_predictor", *out], "no_such_predictor"),
      (["kitti", *out], "argument PROTOCOL: invalid choice: 'kitti'"),
      # Resolved before the set is rendered (minutes): answered at once.
      (["synthetic", "--predictor", "no_pkg.mod:factory", *out], "cannot load no_pkg.mod:factory"),
      (["synthetic", "--predictor", f"checkpoint:{tmp_path / 'norun'}", *out],
       "norun: checkpoint not found"),
  ]
  nothing = [
      (["aflw2000", aflw, *out], "nothing to evaluate: no usable image", "2 missing or bad "
       "annotation"),
      (["micc", micc, tmp_path / "pred", *out], "nothing to evaluate: no usable subject",
       "1 missing scan"),
      (["now", now, tmp_path / "pred", *out], "nothing to evaluate: no usable image",
       "1 missing scan"),
      (["now", now, tmp_path / "pred", "--image-list", now / "escape.txt", *out],
       "escape.txt:2: '../../etc/passwd' is not SUBJECT/CHALLENGE/IMAGE of plain names", ""),
      (["now", now, tmp_path / "pred", "--image-list", now / "absolute.txt", *out],
       "absolute.txt:1: '/etc/passwd' is not SUBJECT/CHALLENGE/IMAGE", ""),
  ]
  results = run_many([["evaluate", *c[0]] for c in cases + nothing], tmp_path)
  for (argv, want), r in zip(cases, results):
    assert_one_line(r["rc"], r["stderr"], 2, want)
  for (argv, *wants), r in zip(nothing, results[len(cases):]):
    # One `excluded:` line per bad input as it is met, then the one error line.
    assert "Traceback" not in r["stderr"] and r["rc"] == 2, r["stderr"]
    err = lines(r["stderr"])
    assert all(l.startswith("excluded: ") for l in err[:-1]), err
    for w in wants:
      assert w in err[-1], (w, err[-1])
  assert not (tmp_path / "report" / "report.md").exists()      # no report of empty tables


def test_nothing_usable_is_never_a_nan_table(tmp_path):
  """The CLI prints 'no images' for an empty yaw bin (a table row would be nan)."""
  from cli_corpus import run_cli
  aflw = tmp_path / "aflw"
  write_photo(aflw / "image00001.jpg", size=200)
  import scipy.io
  pts = np.stack([np.linspace(60, 140, 68), 100 + 20 * np.sin(np.arange(68)),
                  np.zeros(68)]).astype(np.float64)
  scipy.io.savemat(str(aflw / "image00001.mat"), {"pt3d_68": pts,
                                                  "Pose_Para": np.zeros((1, 7))})
  r = run_cli("evaluate", "aflw2000", aflw, "--out", tmp_path / "report", "--no-progress")
  assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert "nan" not in r.stdout.lower(), r.stdout
  assert "no images" in r.stdout and "(1 images)" in r.stdout
