"""The train state: encoder + optimizer as one NNX State pytree, and where it lives on the mesh."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from msma_jax.face_model import FaceModel
from msma_jax.models import build_model
from msma_jax.models.sharding import state_shardings
from msma_jax.train.init import apply_init
from msma_jax.train.optim import make_optimizer


@dataclasses.dataclass
class TrainState:
  """graphdef_train / graphdef_eval: the (model, optimizer) structure with batch norm in training
  (batch statistics, updated running averages) or inference mode; state: the arrays (an nnx.State);
  shardings: a matching pytree of NamedShardings; schedule: step -> learning rate."""
  graphdef_train: Any
  graphdef_eval: Any
  state: Any
  shardings: Any
  schedule: optax.Schedule

  @property
  def step(self) -> int:
    return int(jax.device_get(self.state[1]["step"].value))


def initial_model(config, face_model: FaceModel, *, with_init: bool = True):
  """The encoder of `config.model` with its starting weights: random (seeded by `config.seed`),
  then `config.init` when `with_init` (a resumed run passes False). Returns (model, InitReport or
  None). Raises InitError naming the source before anything is compiled."""
  model = build_model(config.model, face_model, seed=int(config.seed))
  report = apply_init(model, config.get("init"), face_model.sizes) if with_init else None
  return model, report


def create_train_state(config, model, mesh: Mesh, total_steps: int,
                       steps_per_epoch: int) -> TrainState:
  """The optimizer of `config.optim` for `model` (see `initial_model`); both placed on `mesh`."""
  tx, schedule = make_optimizer(config.optim, total_steps, steps_per_epoch)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  model.eval()
  graphdef_eval, _ = nnx.split((model, optimizer))
  model.train()
  graphdef_train, state = nnx.split((model, optimizer))
  shardings = state_shardings(state, mesh)
  state = jax.device_put(state, shardings)
  return TrainState(graphdef_train, graphdef_eval, state, shardings, schedule)

