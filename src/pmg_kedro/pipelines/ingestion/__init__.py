"""Ingestion: raw scene data to validated items, interactions, image index, users and splits."""
