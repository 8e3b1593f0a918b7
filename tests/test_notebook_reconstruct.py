"""The demo notebook runs from top to bottom (nbclient) and draws its pictures."""
import os
import pathlib

import nbformat
from nbclient import NotebookClient

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "reconstruct_demo.ipynb"


def test_reconstruct_demo_notebook_executes(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
      "commit the notebook without outputs"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")     # the kernel inherits the environment
  NotebookClient(nb, timeout=600, kernel_name="python3", resources={
      "metadata": {"path": str(tmp_path)}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  pictures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
  assert len(pictures) == 3                         # overlay, three views, landmarks
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "1 face(s); head pose" in text
  pct = float(text.split("% of the inter-ocular")[0].split("=")[-1])
  assert pct < 5.0
  for name in ("astronaut_face0.obj", "astronaut_face0_overlay.png", "astronaut_face0_lm68.txt"):
    assert name in text
