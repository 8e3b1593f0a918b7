"""The `render` config section: how the differentiable renderer runs (msma_jax.render.RenderForms).

Every choice that depends on the backend is a key here. "auto" takes the CPU form on the CPU backend
and the accelerator form on GPU/TPU; naming a form runs it anywhere (tests/test_backend_paths.py
checks each accelerator form against the CPU form on the CPU).

    batch_mode           auto | map (lax.map over images: the CPU's visibility pass) | vmap (GPU/TPU)
    chunk_sizing         auto | mesh (chunks of ~the triangle count: CPU) | fixed (chunk_fragments)
    chunk_fragments      candidate pixels per rasterizer chunk and image (memory bound per iteration)
    min_chunk_fragments  the fewest per chunk under mesh sizing
    materialize          auto | loop (a run-time while loop: CPU) | barrier (optimization_barrier)

The encoder's convolution implementation is `config.model.conv_impl` (auto | xla | matmul).
"""
import ml_collections

from msma_jax.render.rasterize import DEFAULT_CHUNK_FRAGMENTS, MIN_CHUNK_FRAGMENTS


def get_render_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.batch_mode = "auto"
  c.chunk_sizing = "auto"
  c.chunk_fragments = DEFAULT_CHUNK_FRAGMENTS      # 131,072
  c.min_chunk_fragments = MIN_CHUNK_FRAGMENTS      # 4,096
  c.materialize = "auto"
  return c


def get_config() -> ml_collections.ConfigDict:
  """ml_collections' config-file entry point (`--config=configs/render.py`)."""
  return get_render_config()
