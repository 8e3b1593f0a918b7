"""Networks: the encoder (backbones, attention, fusion, heads) and the identity-loss networks."""
