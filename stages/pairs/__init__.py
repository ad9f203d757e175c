"""Pair stages: mining per preset, instructions, packing."""
