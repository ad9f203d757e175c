"""Model files and wrappers shared by stages: the registry of pinned files, embedders, MediaPipe, the artefact head."""
