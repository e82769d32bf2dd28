"""Training with a program: advantages, TRL reward functions and trainer, `kdsl train`, token masks, checkpoints, merging."""
