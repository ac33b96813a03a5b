"""modelfleet: compress ML models and deliver them to Triton and edge device fleets."""

__version__ = "0.1.0"
