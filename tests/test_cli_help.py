"""Every command and subcommand answers --help and -h with its usage and options, exit 0."""
import contextlib
import io

import pytest

from msma_jax.cli import build_parser, main


def _commands() -> list[list[str]]:
  parser = build_parser()
  sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
  out = [[]]
  for name, p in sub.choices.items():
    out.append([name])
    for action in p._actions:
      if action.__class__.__name__ == "_SubParsersAction":
        out += [[name, child] for child in action.choices]
  return out


COMMANDS = _commands()


def test_every_command_is_listed():
  names = {c[0] for c in COMMANDS if c}
  assert {"info", "demo", "convert-bfm", "prepare-data", "train", "sweep", "reconstruct",
          "evaluate"} <= names
  assert ["evaluate", "micc"] in COMMANDS


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "msma-jax")
def test_help(command, flag):
  out = io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
      code = main([*command, flag])
    except SystemExit as e:
      code = e.code
  text = out.getvalue()
  assert code in (0, None), text
  assert "usage:" in text
  if command == ["train"]:
    assert "--workdir" in text and "--config" in text and "--resume" in text
