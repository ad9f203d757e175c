"""Flows and the aceforge command line."""
