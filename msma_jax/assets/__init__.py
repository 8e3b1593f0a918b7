"""Package data: the embedded face model (see LICENSE-SFM.md)."""
