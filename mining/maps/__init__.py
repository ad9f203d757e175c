"""Condition maps: the classical maps, depth, HED, OpenPose drawing, MediaPipe pose."""
