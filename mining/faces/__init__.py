"""Faces: detection and descriptors (dlib), face pairs and named changes."""
