"""Corpus stages: ingest, embedding, clustering, the demo corpus."""
