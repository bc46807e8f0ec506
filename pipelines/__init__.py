"""A closed-loop production ML pipeline for a tabular fraud model.

Kept import-light on purpose: the BentoML service imports this package and must not pull in
Prefect, DVC, Great Expectations or Evidently.
"""
