"""Optimizer and learning-rate schedule from `config.optim`.

    name            adam | adamw | sgd (with `momentum`)
    learning_rate   peak rate (Deep3DFaceRecon: 1e-4)
    weight_decay    adamw only
    warmup_steps    linear warm-up from 0
    schedule        constant | step (x decay_factor every decay_every_epochs) | cosine (to
                    final_fraction of the peak at the last step)
    grad_clip_norm  global-norm clipping (0 = off)
"""
from __future__ import annotations

import optax

from configs.errors import ConfigError




def make_schedule(c, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  lr = float(c.learning_rate)
  warmup = int(c.get("warmup_steps", 0))
  kind = c.get("schedule", "constant")
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "step":
    every = max(1, int(round(float(c.decay_every_epochs) * steps_per_epoch)))
    boundaries = {b: float(c.decay_factor) for b in range(every, total_steps + every, every)}
    main = optax.piecewise_constant_schedule(lr, boundaries)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, max(1, total_steps - warmup),
                                       alpha=float(c.get("final_fraction", 0.0)))
  else:
    raise ConfigError(f"config.optim.schedule: unknown {kind!r} (constant | step | cosine)")
  if warmup > 0:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


def make_optimizer(c, total_steps: int, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = make_schedule(c, total_steps, steps_per_epoch)
  name = c.get("name", "adam")
  if name == "adam":
    opt = optax.adam(schedule, b1=float(c.get("b1", 0.9)), b2=float(c.get("b2", 0.999)))
  elif name == "adamw":
    opt = optax.adamw(schedule, b1=float(c.get("b1", 0.9)), b2=float(c.get("b2", 0.999)),
                      weight_decay=float(c.get("weight_decay", 1e-4)))
  elif name == "sgd":
    opt = optax.sgd(schedule, momentum=float(c.get("momentum", 0.9)) or None)
  else:
    raise ConfigError(f"config.optim.name: unknown optimizer {name!r} (adam | adamw | sgd)")
  clip = float(c.get("grad_clip_norm", 0.0))
  if clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(clip), opt)
  return opt, schedule
