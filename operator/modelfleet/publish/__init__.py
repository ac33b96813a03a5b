"""Delivery: Triton model repositories and model control."""
