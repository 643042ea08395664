"""The training machinery both scripts share: the loop, checkpoints, signals, the output folder and its record."""
