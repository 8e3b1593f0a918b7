import os

# Tests run on the CPU; multi-device tests start their own subprocesses with more virtual devices.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def embedded():
  from msma_jax.face_model import load_face_model
  return load_face_model("embedded")


@pytest.fixture
def rng():
  return np.random.default_rng(0)
