"""`msma-jax sweep` for studies: seeds, aggregation with intervals, skipping finished points,
failed points, equal wall time. The trainer is replaced by a function that writes the report a
finished `msma-jax train` writes, with known metrics, so the runner's bookkeeping is checked
against numbers computed here; the training itself is covered by test_train.py."""
import csv
import json
import pathlib

import numpy as np
import pytest
from scipy import stats

from msma_jax.cli import main
from msma_jax.train import sweep as sweep_mod

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.py"
# Landmark NME by (attention kind, seed); vertex error = 10 x NME; speed by kind.
NME = {("none", 0): 0.050, ("none", 1): 0.054, ("none", 2): 0.049,
       ("mlka", 0): 0.040, ("mlka", 1): 0.043, ("mlka", 2): 0.041}
SPEED = {"none": 6.0, "mlka": 4.0}


def _yaml(tmp_path, name="study", param="config.model.attention.kind", values=("none", "mlka")):
  path = tmp_path / f"{name}.yaml"
  path.write_text(
      f"name: {name}\nmethod: grid\ncommand: ['${{env}}', msma-jax, train, --config={QUICKSTART}, "
      f"'--workdir={tmp_path}/runs/{{run}}', '${{args}}']\n"
      f"parameters:\n  {param}: {{values: [{', '.join(values)}]}}\n")
  return path


class FakeTrainer:
  """Stands in for `python -m msma_jax.cli train ...`: writes report.json like run_train does."""

  def __init__(self, fail_when=None):
    self.calls, self.fail_when, self.groups = [], fail_when, set()

  def __call__(self, cmd, env=None):
    args = cmd[cmd.index("train") + 1:]
    get = lambda flag, default=None: next(
        (a.split("=", 1)[1] for a in reversed(args) if a.startswith(flag + "=")), default)
    self.calls.append(args)
    self.groups.add(env.get("WANDB_RUN_GROUP"))
    if self.fail_when and self.fail_when in " ".join(args):
      return 2
    kind = get("--config.model.attention.kind", "mlka")
    seed = int(get("--config.seed", 0))
    steps = int(get("--config.train.num_steps", 2000))
    nme = NME[(kind, seed)] - 1e-6 * (steps - 2000) / 100      # more steps, a little better
    workdir = pathlib.Path(get("--workdir"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "report.json").write_text(json.dumps({
        "final_step": steps, "interrupted": False, "skipped_steps": [],
        "eval": {"eval/landmark_nme": nme, "eval/vertex_mm": 10 * nme, "baseline/vertex_mm": 5.3},
        "wall_seconds": 30 + steps / SPEED[kind], "steps_per_s": SPEED[kind]}))
    return 0


@pytest.fixture
def trainer(monkeypatch):
  fake = FakeTrainer()
  monkeypatch.setattr(sweep_mod.subprocess, "call", fake)
  return fake


def _out(tmp_path, name="study"):
  return tmp_path / "runs" / f"{name}_summary"


def _summary_rows(tmp_path):
  with open(_out(tmp_path) / "sweep_summary.csv") as f:
    return {r["config.model.attention.kind"] + ("*" if r["budget"] == "equal_time" else ""): r
            for r in csv.DictReader(f)}


def test_welch_interval_matches_scipy():
  a, b = [0.050, 0.054, 0.049], [0.040, 0.043, 0.041, 0.046]
  d, lo, hi = sweep_mod.welch_interval(a, b)
  ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
  assert d == pytest.approx(np.mean(a) - np.mean(b), abs=1e-15)
  assert (lo, hi) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
  # By hand for a = [1, 2, 3], b = [2, 4, 6]: se² = 1/3 + 4/3, Welch dof = 50/17.
  d, lo, hi = sweep_mod.welch_interval([1, 2, 3], [2, 4, 6])
  half = stats.t.ppf(0.975, 50 / 17) * np.sqrt(5 / 3)
  assert (d, lo, hi) == (-2, pytest.approx(-2 - half), pytest.approx(-2 + half))
  assert np.isnan(sweep_mod.welch_interval([1.0], [1.0, 2.0])[1])


def test_seeds_aggregate_to_mean_sd_and_interval_against_the_reference(tmp_path, trainer):
  code = sweep_mod.run_sweep(_yaml(tmp_path), seeds=3, reference="model.attention.kind=mlka")
  assert code == 0 and len(trainer.calls) == 6 and trainer.groups == {"study"}
  rows = _summary_rows(tmp_path)
  none = [NME[("none", s)] for s in range(3)]
  mlka = [NME[("mlka", s)] for s in range(3)]
  r = rows["none"]
  assert float(r["eval/landmark_nme mean"]) == pytest.approx(np.mean(none))
  assert float(r["eval/landmark_nme std"]) == pytest.approx(np.std(none, ddof=1))
  ci = stats.ttest_ind(none, mlka, equal_var=False).confidence_interval(0.95)
  assert float(r["eval/landmark_nme diff"]) == pytest.approx(np.mean(none) - np.mean(mlka))
  assert float(r["eval/landmark_nme diff lo95"]) == pytest.approx(ci.low)
  assert float(r["eval/landmark_nme diff hi95"]) == pytest.approx(ci.high)
  assert float(r["steps_per_s"]) == 6.0 and rows["mlka"]["reference"] == "True"
  assert rows["mlka"]["eval/landmark_nme diff"] == ""
  md = (_out(tmp_path) / "sweep_summary.md").read_text()
  assert "**(reference)**" in md and "95 %" in md
  assert (_out(tmp_path) / "sweep_summary.png").stat().st_size > 1000
  with open(_out(tmp_path) / "sweep_runs.csv") as f:
    assert len(list(csv.DictReader(f))) == 6


def test_a_rerun_skips_finished_points_and_another_sweep_reuses_the_same_config(tmp_path, trainer):
  assert sweep_mod.run_sweep(_yaml(tmp_path), seeds=2) == 0
  assert len(trainer.calls) == 4
  assert sweep_mod.run_sweep(_yaml(tmp_path), seeds=2) == 0
  assert len(trainer.calls) == 4                     # nothing trained again
  # A second study in the same folder: its `per_attribute` point is the config the first one
  # trained as attention.kind=mlka (the quickstart's defaults): reused, only `shared` trains.
  other = _yaml(tmp_path, "heads", "config.model.heads.mode", ("per_attribute", "shared"))
  assert sweep_mod.run_sweep(other, seeds=2, reference="model.heads.mode=per_attribute") == 0
  assert len(trainer.calls) == 6
  assert all("--config.model.heads.mode=shared" in c for c in trainer.calls[4:])
  # Other train flags after `--` make another config: its folder holds the old run, so the point
  # fails with a line saying so instead of resuming the other run's checkpoints.
  assert sweep_mod.run_sweep(_yaml(tmp_path), seeds=1, extra=["--config.train.num_steps=100"]) == 1
  assert len(trainer.calls) == 6
  md = (_out(tmp_path) / "sweep_summary.md").read_text()
  assert md.count("holds a run of another config") == 2


def test_a_failed_point_is_reported_and_the_others_are_summarised(tmp_path, monkeypatch, capsys):
  fake = FakeTrainer(fail_when="kind=none --config.seed=1")
  monkeypatch.setattr(sweep_mod.subprocess, "call", fake)
  code = sweep_mod.run_sweep(_yaml(tmp_path), seeds=3, reference="model.attention.kind=mlka")
  assert code == 1 and len(fake.calls) == 6
  md = (_out(tmp_path) / "sweep_summary.md").read_text()
  assert "Failed or not run points (1" in md and "attention.kind=none,config.seed=1: failed: exit status 2" in md
  r = _summary_rows(tmp_path)["none"]
  assert r["n"] == "2"
  assert float(r["eval/landmark_nme mean"]) == pytest.approx(np.mean([0.050, 0.049]))
  # --summarise trains nothing and lists the missing point as not run (exit status 0).
  assert sweep_mod.run_sweep(_yaml(tmp_path), seeds=3, reference="model.attention.kind=mlka",
                             summarise_only=True) == 0 and len(fake.calls) == 6
  assert "config.seed=1: not run" in (_out(tmp_path) / "sweep_summary.md").read_text()
  # The rerun trains the failed point only.
  monkeypatch.setattr(sweep_mod.subprocess, "call", FakeTrainer())
  assert sweep_mod.run_sweep(_yaml(tmp_path), seeds=3, reference="model.attention.kind=mlka") == 0
  assert _summary_rows(tmp_path)["none"]["n"] == "3"


def test_equal_time_scales_steps_by_measured_speed(tmp_path, trainer):
  code = sweep_mod.run_sweep(_yaml(tmp_path), seeds=2, reference="model.attention.kind=mlka",
                             equal_time=True, extra=["--config.train.num_steps=400"])
  assert code == 0 and len(trainer.calls) == 4 + 2   # the reference is its own equal-time point
  eq = trainer.calls[4:]
  assert all("--config.model.attention.kind=none" in c for c in eq)
  assert all("--config.train.num_steps=600" in c for c in eq)         # 400 x 6.0 / 4.0
  rows = _summary_rows(tmp_path)
  assert rows["none*"]["steps"] == "600.0" and rows["none*"]["eval/landmark_nme diff"] != ""


def test_study_arguments_are_checked_in_one_line(tmp_path, capsys):
  path = _yaml(tmp_path)
  cases = [(["--seeds", "0"], "--seeds 0: must be at least 1"),
           (["--reference", "model.attention.kind=lka"], "no grid point has these values"),
           (["--reference", "model.heads.mode=shared"], "is not `param=value` with a swept param"),
           (["--equal-time"], "--equal-time needs --reference")]
  for extra, want in cases:
    assert main(["sweep", str(path), *extra, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and want in err, err
