"""Model code shared by the training steps: networks, data encoding, loops, checkpoints."""
