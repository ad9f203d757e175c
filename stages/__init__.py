"""The pipeline's stages, grouped as corpus, pairs and synthesis, with the registry and the supervision gate."""
