"""Algorithms and model wrappers over numpy / PIL / torch. No Prefect, no Ray."""
