"""Input pipelines: detection/alignment, Grain pipelines, TFDS builders, synthetic faces."""
