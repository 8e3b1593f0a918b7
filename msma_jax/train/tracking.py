"""Experiment tracking: Weights & Biases, local JSON lines, a progress bar and image panels.

Only JAX process 0 logs. `config.wandb.mode`: online | offline | disabled | auto (online when an
API key is configured — WANDB_API_KEY or a ~/.netrc entry — else offline). Offline runs are written
under `<workdir>/wandb/` and can be uploaded later with `wandb sync`. Every scalar also goes to
`<workdir>/metrics.jsonl` and image panels to `<workdir>/images/`, so a run is readable without W&B.
"""
from __future__ import annotations

import json
import uuid
import os
import pathlib
import subprocess
import time
from typing import Optional

import cv2
import jax
import numpy as np
from tqdm.auto import tqdm


def resolve_wandb_mode(mode: str) -> str:
  if mode != "auto":
    return mode
  if os.environ.get("WANDB_API_KEY"):
    return "online"
  netrc = pathlib.Path.home() / ".netrc"
  if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
    return "online"
  return "offline"


def code_version() -> str:
  """git commit of the source tree (+dirty), else the package version."""
  import msma_jax
  root = pathlib.Path(msma_jax.__file__).resolve().parents[1]
  try:
    rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, timeout=5)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5)
    if rev.returncode == 0:
      return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
  except (OSError, subprocess.SubprocessError):
    pass
  return f"msma_jax {msma_jax.__version__}"


class Tracker:
  def __init__(self, workdir: str | pathlib.Path, config, total_steps: int, start_step: int = 0):
    self.workdir = pathlib.Path(workdir)
    self.enabled = jax.process_index() == 0
    self.run = None
    self.bar = None
    self.mode = resolve_wandb_mode(config.wandb.mode)
    self._last_time, self._last_step = time.perf_counter(), start_step
    self.images_per_step = int(config.data.global_batch_size)
    if not self.enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    (self.workdir / "images").mkdir(exist_ok=True)
    self.jsonl = open(self.workdir / "metrics.jsonl", "a")
    version = code_version()
    (self.workdir / "config.json").write_text(json.dumps(
        {"config": config.to_dict(), "code_version": version}, indent=1, default=str))
    if self.mode != "disabled":
      import wandb
      id_file = self.workdir / "wandb_run_id"
      # The id is kept in the work dir so that a resumed run continues the same W&B run.
      run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
      id_file.write_text(run_id)
      self.run = wandb.init(project=config.wandb.project, entity=config.wandb.get("entity") or None,
                            name=config.wandb.get("name") or self.workdir.name,
                            tags=list(config.wandb.get("tags", ())), dir=str(self.workdir),
                            mode=self.mode, id=run_id, resume="allow",
                            config={**config.to_dict(), "code_version": version})
    self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                    dynamic_ncols=True, disable=not config.train.get("progress", True))

  def log(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    now = time.perf_counter()
    steps = step - self._last_step
    if steps > 0 and now > self._last_time:
      metrics = {**metrics, "perf/steps_per_s": steps / (now - self._last_time),
                 "perf/images_per_s": steps * self.images_per_step / (now - self._last_time)}
    self._last_time, self._last_step = now, step
    scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
    self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self.jsonl.flush()
    if self.run is not None:
      self.run.log(scalars, step=step)
    if self.bar is not None:
      shown = {k.split("/")[-1]: f"{v:.4g}" for k, v in scalars.items()
               if k in ("train/total", "perf/images_per_s", "eval/landmark_nme")}
      self.bar.set_postfix(shown, refresh=False)

  def advance(self, step: int) -> None:
    if self.bar is not None:
      self.bar.update(step - self.bar.n)

  def log_images(self, step: int, panel: np.ndarray, name: str = "train/panel") -> None:
    """panel: float RGB [H, W, 3] in [0, 1]; saved as PNG and logged to W&B."""
    if not self.enabled:
      return
    path = self.workdir / "images" / f"{name.replace('/', '_')}_{step:07d}.png"
    rgb = (np.clip(panel, 0, 1) * 255).round().astype(np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if self.run is not None:
      import wandb
      self.run.log({name: wandb.Image(rgb, caption="input | render | overlay | landmarks "
                                      "(green: target, red: prediction)")}, step=step)

  def message(self, text: str) -> None:
    if self.enabled:
      (self.bar.write if self.bar is not None else print)(text)

  def close(self) -> Optional[str]:
    if not self.enabled:
      return None
    if self.bar is not None:
      self.bar.close()
    self.jsonl.close()
    run_dir = None
    if self.run is not None:
      run_dir = self.run.dir
      self.run.finish()
    return run_dir


def image_panel(images, renders, masks, target_lm, pred_lm, max_rows: int = 4) -> np.ndarray:
  """Rows of [input | render | render over input | landmarks] for the first `max_rows` faces."""
  rows = []
  for i in range(min(max_rows, images.shape[0])):
    img = np.clip(images[i], 0, 1)
    ren = np.clip(renders[i], 0, 1)
    m = np.clip(masks[i], 0, 1)[..., None]
    overlay = ren * m + img * (1 - m)
    lm = img.copy()
    for pts, colour in ((target_lm[i], (0.1, 0.9, 0.1)), (pred_lm[i], (0.95, 0.1, 0.1))):
      for x, y in pts - 0.5:
        cv2.circle(lm, (int(round(x * 4)), int(round(y * 4))), 4, colour, -1, cv2.LINE_AA, 2)
    rows.append(np.concatenate([img, ren * m, overlay, lm], axis=1))
  return np.concatenate(rows, axis=0)
