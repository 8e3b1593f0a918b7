"""`msma-jax convert-bfm` over generated damaged BFM folders, in one subprocess: a missing file or
key, indices out of range or not integers, a std file that is not numbers, bases of the wrong
shape, a bad output path: each one line naming the file (and key), exit 2, nothing written."""
import numpy as np
import scipy.io
from bfm_fixtures import write_raw_bfm09
from cli_corpus import assert_one_line, run_many


def _damage(folder, kind: str) -> None:
  """Writes a tiny raw BFM 2009 folder into `folder`, then damages it the `kind` way."""
  write_raw_bfm09(folder, np.random.default_rng(0))
  if kind == "front_idx_key":
    scipy.io.savemat(str(folder / "BFM_front_idx.mat"), {"other": np.ones((3, 1))})
  elif kind == "front_idx_range":
    scipy.io.savemat(str(folder / "BFM_front_idx.mat"), {"idx": np.array([[1.0], [2.0], [999.0]])})
  elif kind == "exp_idx_zero":
    scipy.io.savemat(str(folder / "BFM_exp_idx.mat"), {"trimIndex": np.zeros((30, 1))})
  elif kind == "exp_idx_count":
    scipy.io.savemat(str(folder / "BFM_exp_idx.mat"), {"trimIndex": np.arange(1, 11.0)[:, None]})
  elif kind == "front_idx_fraction":
    scipy.io.savemat(str(folder / "BFM_front_idx.mat"), {"idx": np.array([[1.5], [2.0]])})
  elif kind == "std_text":
    (folder / "std_exp.txt").write_text("a b c\n")
  elif kind == "std_short":
    (folder / "std_exp.txt").write_text("1 2 3\n")
  elif kind == "info_truncated":
    (folder / "facemodel_info.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 40)
  elif kind == "missing_file":
    (folder / "Exp_Pca.bin").unlink()
  elif kind == "exp_bin_short":
    (folder / "Exp_Pca.bin").write_bytes(b"\x01\x00")
  elif kind == "shape_pc_rows":
    m = scipy.io.loadmat(str(folder / "01_MorphableModel.mat"))
    m["shapePC"] = m["shapePC"][:10]
    scipy.io.savemat(str(folder / "01_MorphableModel.mat"),
                     {k: v for k, v in m.items() if not k.startswith("__")})
  elif kind == "triangle_range":
    scipy.io.savemat(str(folder / "facemodel_info.mat"),
                     {"tri": np.array([[1, 2, 300.0]]), "keypoints": np.ones((1, 68))})


CASES = {
    "front_idx_key": "BFM_front_idx.mat: lacks the key 'idx' (has: other)",
    "front_idx_range": "BFM_front_idx.mat: 'idx' holds indices 1 to 999, outside 1 to 30",
    "exp_idx_zero": "BFM_exp_idx.mat: 'trimIndex' holds indices 0 to 0, outside 1 to 40",
    "exp_idx_count": "BFM_exp_idx.mat: 'trimIndex' lists 10 vertices, the expression basis",
    "front_idx_fraction": "BFM_front_idx.mat: 'idx' must hold integer (1-based) vertex indices",
    "std_text": "std_exp.txt: not a list of numbers",
    "std_short": "std_exp.txt: needs 64 finite standard deviations, has 3",
    "info_truncated": "facemodel_info.mat: not a readable MATLAB .mat file",
    "missing_file": "missing ['Exp_Pca.bin']",
    "exp_bin_short": "Exp_Pca.bin: too short",
    "shape_pc_rows": "01_MorphableModel.mat: shapeMU (120, 1), shapePC (10, 199)",
    "triangle_range": "'triangles' must be [F, 3] vertex indices in [0, 20)",
}


def test_damaged_bfm_folders_are_one_line_naming_the_file(tmp_path):
  (tmp_path / "afile").write_text("x")
  cases = []
  for kind in CASES:
    _damage(tmp_path / kind, kind)
    cases.append(["convert-bfm", tmp_path / kind, "--out", tmp_path / "out" / f"{kind}.npz"])
  good = tmp_path / "good"
  write_raw_bfm09(good, np.random.default_rng(0))
  paths = [(["--out", tmp_path / "m.txt"], "--out " + str(tmp_path / "m.txt") + ": unknown file "
            "type '.txt'; use .npz or .mat"),
           (["--out", tmp_path], f"--out {tmp_path}: is a folder"),
           (["--out", tmp_path / "afile" / "m.npz"], "which is a file")]
  cases += [["convert-bfm", good, *extra] for extra, _ in paths]
  cases.append(["convert-bfm", tmp_path / "nowhere", "--out", tmp_path / "m.npz"])
  cases.append(["convert-bfm", good, "--out", tmp_path / "good.npz"])
  results = run_many(cases, tmp_path)
  wants = list(CASES.values()) + [w for _, w in paths] + ["nowhere: BFM folder not found"]
  for want, r in zip(wants, results):
    assert_one_line(r["rc"], r["stderr"], 2, "msma-jax convert-bfm: error: ", want)
  assert not (tmp_path / "out").exists()
  assert results[-1]["rc"] == 0 and (tmp_path / "good.npz").is_file(), results[-1]["stderr"]
