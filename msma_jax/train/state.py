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


def create_train_state(config, face_model: FaceModel, mesh: Mesh, total_steps: int,
                       steps_per_epoch: int) -> TrainState:
  """Builds the encoder of `config.model`, its optimizer, and places both on `mesh`."""
  tx, schedule = make_optimizer(config.optim, total_steps, steps_per_epoch)
  model = build_model(config.model, face_model, seed=int(config.seed))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  model.eval()
  graphdef_eval, _ = nnx.split((model, optimizer))
  model.train()
  graphdef_train, state = nnx.split((model, optimizer))
  shardings = state_shardings(state, mesh)
  state = jax.device_put(state, shardings)
  return TrainState(graphdef_train, graphdef_eval, state, shardings, schedule)


def model_state(state):
  """The encoder's part of a train state (what inference checkpoints need)."""
  return state[0]
