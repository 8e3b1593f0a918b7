"""`msma-jax train` over generated bad configs and flags, in one subprocess: a missing file, a
syntax error, no get_config, an unknown variant or --config.x.y key, a value of the wrong type or
out of range (nan) are each one line naming the file or key, exit 2, before anything is built."""

from cli_corpus import assert_one_line, run_many

QUICK = "configs/quickstart.py"

CONFIG_FILES = {
    "syntax.py": "def get_config(:\n  pass\n",
    "no_get_config.py": "x = 1\n",
    "returns_none.py": "def get_config():\n  return None\n",
    "raises.py": "def get_config():\n  raise RuntimeError('boom')\n",
    "imports_missing.py": "import no_such_module_anywhere\n",
    "takes_no_arg.py": "from configs.quickstart import get_config as q\ndef get_config():\n"
                       "  return q()\n",
}


def _cases(tmp):
  """(argv after `train`, the line must contain)."""
  w = ["--workdir", f"{tmp}/run"]
  return [
      (["--config", f"{tmp}/nope.py", *w], f"--config {tmp}/nope.py: config file not found"),
      (["--config", str(tmp), *w], f"--config {tmp}: not a file"),
      (["--config", f"{tmp}/syntax.py", *w], "syntax.py: syntax error at line 1"),
      (["--config", f"{tmp}/no_get_config.py", *w], "defines no get_config() function"),
      (["--config", f"{tmp}/returns_none.py", *w], "get_config() returned NoneType"),
      (["--config", f"{tmp}/raises.py", *w], "raises.py: boom"),
      (["--config", f"{tmp}/imports_missing.py", *w], "fails to load (ModuleNotFoundError"),
      (["--config", f"{tmp}/takes_no_arg.py:r18", *w], "takes_no_arg.py:r18: "),
      (["--config", "configs/ablations.py:no_such_variant", *w], "unknown variant 'no_such_variant'"),
      (["--config", QUICK, *w, "--config.train.nosuch=3"],
       "--config.train.nosuch: unknown config key 'nosuch' in config.train (has: "),
      (["--config", QUICK, *w, "--config.nosuch.x=3"], "unknown config key 'nosuch' in config "),
      (["--config", QUICK, *w, "--config.train.num_steps.deeper=3"],
       "config.train.num_steps is a value, not a section"),
      (["--config", QUICK, *w, "--config.train.num_steps=abc"], "--config.train.num_steps=abc"),
      (["--config", QUICK, *w, "--bogus"], "Unknown command line flag 'bogus'"),
      (["--config", QUICK], "--workdir is required"),
      (["--config", QUICK, "--workdir", f"{tmp}/afile"], f"--workdir {tmp}/afile: is a file"),
      (["--config", QUICK, "--workdir", f"{tmp}/afile/run"], f"lies under {tmp}/afile, which is "
       "a file"),
      (w, "--config is required"),
      (["--config", QUICK, *w, "--config.loss.landmark=nan"],
       "config.loss.landmark must be finite, got nan"),
      (["--config", QUICK, *w, "--config.loss.photometric=-1"],
       "config.loss.photometric must be >= 0.0, got -1"),
  ]


def test_config_errors_are_one_line_naming_the_file_or_key(tmp_path):
  for name, text in CONFIG_FILES.items():
    (tmp_path / name).write_text(text)
  (tmp_path / "afile").write_text("x")
  cases = _cases(tmp_path)
  results = run_many([["train", *argv] for argv, _ in cases], tmp_path)
  for (argv, want), r in zip(cases, results):
    line = assert_one_line(r["rc"], r["stderr"], 2, "msma-jax train: error: ", want)
    assert len(line) < 600, line
  assert not (tmp_path / "run").exists()       # nothing was started


def test_sweep_definition_errors_are_one_line(tmp_path):
  """`msma-jax sweep` (which runs train per grid point) answers a bad sweep file in one line."""
  (tmp_path / "bad.yaml").write_text("parameters: [\n")
  (tmp_path / "no_train.yaml").write_text("program: x\nparameters:\n  a:\n    values: [1]\n")
  cases = [(["sweep", tmp_path / "nope.yaml", "--dry-run"], "nope.yaml: sweep file not found"),
           (["sweep", tmp_path / "bad.yaml", "--dry-run"], "bad.yaml: not valid YAML"),
           (["sweep", tmp_path / "no_train.yaml", "--dry-run"], "command must run `msma-jax train`"),
           (["sweep", tmp_path, "--dry-run"], str(tmp_path))]
  for (argv, want), r in zip(cases, run_many([c for c, _ in cases], tmp_path)):
    assert_one_line(r["rc"], r["stderr"], 2, "msma-jax sweep: error: ", want)
