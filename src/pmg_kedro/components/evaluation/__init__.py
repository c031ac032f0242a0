"""Evaluation: image metrics, semantic probes, keyword quality, Tables 1-3, the MMGCN recommendation experiment. Imports every other group; nothing imports it."""
