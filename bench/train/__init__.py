"""Training: the one loop, device and runtime settings, the live TensorBoard view."""
