"""Corpus stages: read sources, clean, deduplicate, split, tokenize into shards, load windows."""
