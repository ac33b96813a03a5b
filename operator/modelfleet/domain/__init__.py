"""Pure decisions: no I/O, no clock, no kopf, no torch."""
