"""Prefect flows: thin wrappers that call DVC, the pipeline package and the registry."""
