"""ml-collections configs: `get_config()` files for training, sections shared between them."""
