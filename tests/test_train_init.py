"""`config.init`: a run's weights from a torchvision / Deep3DFaceRecon file (generated here in their
layouts) equal the source; partial loading reports what it skipped; bad sources are one line.
Init from finished msma-jax runs (1 and 8 devices) is tested in test_train.py beside those runs."""
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs.model import get_model_config
from msma_jax.face_model import BFM_SIZES, CoefficientSizes
from msma_jax.models import build_model
from msma_jax.train.init import InitError, apply_init, parse_init_source
from configs.errors import ConfigError
from weight_fixtures import deep3d_state, numpy_resnet_state

torch = pytest.importorskip("torch", reason="writing .pth files needs torch (pip install torch==2.13.0)")
EMBEDDED = CoefficientSizes(id=63, exp=6, tex=8)


def init(source, partial=False, which="best"):
  return ml_collections.ConfigDict({"source": source, "partial": partial, "which": which})


def model(variant="msma_r18", sizes=EMBEDDED, **top):
  c = get_model_config(variant)
  c.fusion.width = 16
  for k, v in top.items():
    setattr(c, k, v)
  return build_model(c, sizes, seed=3)


def save(path, state):
  torch.save({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}, str(path))
  return path


def resnet18_file(tmp_path, **edits):
  state = numpy_resnet_state((2, 2, 2, 2), False, seed=1)
  state["fc.weight"], state["fc.bias"] = np.ones((1000, 512), np.float32), np.ones(1000, np.float32)
  for k, v in edits.items():
    if v is None:
      state.pop(k)
    else:
      state[k] = v
  return save(tmp_path / "resnet18.pth", state), state


def test_torchvision_init_equals_the_source_and_reports(tmp_path):
  path, state = resnet18_file(tmp_path)
  m = model()
  fusion_before = np.asarray(m.fusion.proj["C5"].conv.kernel[...]).copy()
  report = apply_init(m, init(f"torchvision:{path}"), EMBEDDED)
  b = m.backbone
  np.testing.assert_array_equal(np.asarray(b.conv1.kernel[...]),
                                state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(np.asarray(b.layer3[1].conv2.kernel[...]),
                                state["layer3.1.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(np.asarray(b.layer4[1].bn2.var[...]),
                                state["layer4.1.bn2.running_var"])
  assert len(report.loaded) == 100 and len(report.reshaped) == 20   # 20 convolutions change layout
  assert not report.missing and not report.unused and not report.mismatched
  # fusion, attention and heads are not in an ImageNet file: kept as initialised, listed
  assert any(k.startswith("fusion/") for k in report.kept)
  assert any(k.startswith("heads/") for k in report.kept)
  table = report.table()
  assert "loaded" in table and "100" in table and "not covered" in table
  np.testing.assert_array_equal(np.asarray(m.fusion.proj["C5"].conv.kernel[...]), fusion_before)


def test_shape_mismatch_fails_naming_the_tensor_unless_partial(tmp_path):
  bad = np.zeros((256, 256, 5, 5), np.float32)
  path, state = resnet18_file(tmp_path, **{"layer3.1.conv2.weight": bad,
                                           "layer4.1.bn2.running_var": None})
  m = model()
  before = np.asarray(m.backbone.conv1.kernel[...]).copy()
  with pytest.raises(InitError, match=r"resnet18.pth: .*'layer3.1.conv2.weight' has shape "
                     r"\(256, 256, 5, 5\), model expects \(256, 256, 3, 3\) \(2 problem\(s\); "
                     r"config.init.partial=True"):
    apply_init(m, init(f"torchvision:{path}"), EMBEDDED)
  np.testing.assert_array_equal(np.asarray(m.backbone.conv1.kernel[...]), before)   # untouched
  report = apply_init(m, init(f"torchvision:{path}", partial=True), EMBEDDED)
  assert report.missing == ["layer4.1.bn2.running_var"]
  assert report.mismatched == ["layer3.1.conv2.weight: (256, 256, 5, 5) vs (256, 256, 3, 3)"]
  assert len(report.loaded) == 98
  np.testing.assert_array_equal(np.asarray(m.backbone.conv1.kernel[...]),
                                state["conv1.weight"].transpose(2, 3, 1, 0))
  assert "missing" in report.table() and "wrong shape" in report.table()


def test_another_architecture_is_one_line(tmp_path):
  path = save(tmp_path / "r50.pth", numpy_resnet_state((3, 4, 6, 3), True))
  with pytest.raises(InitError, match=r"checkpoint looks like resnet50 .* configured backbone is "
                     r"resnet18"):
    apply_init(model(), init(f"torchvision:{path}"), EMBEDDED)


def deep3d_file(tmp_path):
  ckpt = deep3d_state()
  rng = np.random.default_rng(2)
  for k in ckpt["net_recon"]:
    if k.startswith("final_layers."):
      ckpt["net_recon"][k] = rng.normal(size=ckpt["net_recon"][k].shape).astype(np.float32)
  path = tmp_path / "epoch_20.pth"
  torch.save({"net_recon": {k: torch.as_tensor(v) for k, v in ckpt["net_recon"].items()}},
             str(path))
  return path, ckpt["net_recon"]


def test_deep3d_init_loads_heads_for_bfm_and_reinitialises_them_otherwise(tmp_path):
  path, state = deep3d_file(tmp_path)
  m = model("deep3d_r50", BFM_SIZES, backbone="resnet18")
  report = apply_init(m, init(f"deep3d:{path}"), BFM_SIZES)
  assert len(report.loaded) == 100 + 12 and not report.reinitialised
  np.testing.assert_array_equal(np.asarray(m.heads.heads["id"].out.kernel[...]),
                                state["final_layers.0.weight"][:, :, 0, 0].T)
  trans = np.concatenate([state["final_layers.5.bias"], state["final_layers.6.bias"]])
  np.testing.assert_array_equal(np.asarray(m.heads.heads["trans"].out.bias[...]), trans)
  np.testing.assert_array_equal(np.asarray(m.backbone.conv1.kernel[...]),
                                state["backbone.conv1.weight"].transpose(2, 3, 1, 0))
  # the embedded face model (63/6/8 coefficients): the backbone loads, the heads start afresh
  e = model("deep3d_r50", EMBEDDED, backbone="resnet18")
  report = apply_init(e, init(f"deep3d:{path}"), EMBEDDED)
  assert len(report.loaded) == 100 and report.reinitialised
  assert np.all(np.asarray(e.heads.heads["id"].out.kernel[...]) == 0)   # zero-initialised heads
  # MSMA on top of net_recon's backbone (the paper's setting): fusion / attention / heads kept
  msma = model("msma_r18", EMBEDDED, input_norm="none")
  report = apply_init(msma, init(f"deep3d:{path}"), EMBEDDED)
  assert len(report.loaded) == 100 and any(k.startswith("fusion/") for k in report.kept)


@pytest.mark.parametrize("source, match", [
    ("torchvision:/nonexistent/r18.pth", r"/nonexistent/r18.pth not found"),
    ("run:/nonexistent/run", r"/nonexistent/run not found"),
])
def test_missing_sources(source, match):
  with pytest.raises(InitError, match=match):
    apply_init(model(), init(source), EMBEDDED)


def test_corrupt_file_and_run_without_checkpoints(tmp_path):
  bad = tmp_path / "broken.pth"
  bad.write_bytes(b"\x00not a torch file")
  with pytest.raises(InitError, match="broken.pth: torch.load failed"):
    apply_init(model(), init(f"torchvision:{bad}"), EMBEDDED)
  (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
  with pytest.raises(InitError, match="empty_run: no msma-jax checkpoint here"):
    apply_init(model(), init(f"run:{tmp_path / 'empty_run'}"), EMBEDDED)


@pytest.mark.parametrize("source", ["resnet.pth", "imagenet:x.pth", "run:"])
def test_malformed_source_is_a_config_error(source):
  with pytest.raises(ConfigError, match="config.init.source must be KIND:PATH"):
    parse_init_source(init(source))


def test_cli_bad_init_file_is_one_line_before_any_work(tmp_path):
  bad = tmp_path / "broken.pth"
  bad.write_bytes(b"garbage")
  p = subprocess.run([sys.executable, "-m", "msma_jax.cli", "train", "--config",
                      "configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
                      f"--config.init.source=torchvision:{bad}",
                      f"--config.data.path={tmp_path / 'never_built'}"],
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 2
  lines = [l for l in p.stderr.splitlines() if l.strip() and "Warning" not in l
           and "pkg_resources" not in l]
  assert len(lines) == 1 and "broken.pth" in lines[0] and "Traceback" not in p.stderr
  assert not (tmp_path / "never_built").exists()          # no dataset was rendered first


def test_a_checkpoint_of_the_format_before_named_items_still_loads(tmp_path):
  """Format 1: one `state` item holding {0: model, 1: optimizer}; `load_model` reads its model."""
  import json

  import orbax.checkpoint as ocp
  from flax import nnx
  from configs.quickstart import get_config
  from msma_jax.train.checkpoint import load_model
  config = get_config("r18")
  config.model.fusion.width = 16
  m = build_model(config.model, EMBEDDED, seed=5)
  step = tmp_path / "run" / "checkpoints" / "latest" / "7"
  with ocp.StandardCheckpointer() as ckptr:           # waits for the asynchronous write
    ckptr.save(step / "state", {"0": nnx.to_pure_dict(nnx.state(m)), "1": {"step": np.int32(7)}})
  (step / "meta").mkdir()
  (step / "meta" / "metadata").write_text(json.dumps({
      "config": config.to_dict(), "step": 7, "face_model": "embedded", "image_size": 224,
      "coefficient_sizes": list(EMBEDDED)}))
  loaded, meta = load_model(tmp_path / "run")
  assert meta["step"] == 7
  np.testing.assert_array_equal(np.asarray(loaded.backbone.conv1.kernel[...]),
                                np.asarray(m.backbone.conv1.kernel[...]))
  np.testing.assert_array_equal(np.asarray(loaded.backbone.bn1.mean[...]),
                                np.asarray(m.backbone.bn1.mean[...]))
