"""benchmarks/device_suite.py: the --tiny run end to end (a smoke test of every row's code path,
not a timing), and the per-row error handling."""
import json
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_suite  # noqa: E402

ROWS = ["render x1", "render x4", "train msma_r18", "quickstart step", "reconstruct", "pipeline",
        "pipeline decode only", "pipeline"]


def _positive(v) -> bool:
  return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_a_failing_row_reports_its_error_and_the_rest_run():
  rows = device_suite.run_rows([("a", lambda: {"images_per_s": 2.0}), ("b", lambda: 1 / 0),
                                ("c", lambda: {"faces_per_s": 3.0})], deadline=math.inf)
  assert [r["error"] for r in rows] == [None, "ZeroDivisionError: division by zero", None]
  assert rows[2]["faces_per_s"] == 3.0
  late = device_suite.run_rows([("d", lambda: {})], deadline=-math.inf)
  assert late[0]["error"] == "skipped: time budget spent" and "wall_s" not in late[0]
  assert device_suite.format_row(rows[1]).endswith("| ZeroDivisionError: division by zero |")


def test_tiny_suite_runs_every_row(tmp_path):
  out = tmp_path / "tiny.json"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_suite.py"), "--tiny",
                         "--json", str(out)], capture_output=True, text=True, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["meta"]["backend"] == "cpu" and result["meta"]["tiny"] is True
  assert result["sizes"]["image"] == 32
  rows = result["rows"]
  assert [r["name"] for r in rows] == ROWS
  assert [r for r in rows if r["error"]] == []
  assert [r["triangles"] for r in rows[:2]] == [6736, 4 * 6736]
  for r in rows[:2]:
    assert _positive(r["renders_per_s"]) and _positive(r["fwd_bwd_renders_per_s"])
  for r in rows[2:4]:
    assert _positive(r["images_per_s"]) and _positive(r["ms_per_step"])
    assert _positive(r["memory_analysis_bytes"]) and r["peak_bytes"] is None    # CPU: no stats
    assert math.isclose(r["images_per_s"], r["images_per_s_per_device"])       # one device
  assert rows[2]["setting"] == "msma_r18 32² bfloat16, batch 2 per device"
  share = rows[2]["share"]                               # timed at --share-batch (2)
  assert set(share) == {"encoder", "render", "losses"} and "share" not in rows[3]
  assert 0 < share["encoder"] < 1.5 and 0 < share["render"] < 1.5
  assert _positive(rows[4]["faces_per_s"])
  for r in rows[5:]:
    assert _positive(r["images_per_s"]) and _positive(r["images_per_s_per_core"])
  assert "| train msma_r18 |" in proc.stdout and "wrote" in proc.stdout
