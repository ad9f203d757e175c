"""Synthesis stages: segmentation, objects, repainting, text, maps, faces, style, chains, and their packers."""
