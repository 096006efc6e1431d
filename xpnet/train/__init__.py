"""Floor 4: the training loop (``Network``), its callbacks, history and progress display."""
