"""materialize: seed the online feature store with the events of the raw snapshot.

Not a DVC stage: the store is live state once the service runs (every scored transaction is
appended), so an existing, non-empty store is only replaced when asked to; the replacement is
atomic (readers see the old content or the new, never a mix).
"""

from __future__ import annotations

from pipelines.config import Settings
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.io import storage
from pipelines.io.feature_store import open_store


def run(settings: Settings, force: bool = False) -> int:
    """Seed the store at `serving.feature_store` (any kind `open_store` knows) unless it already
    holds events (`force`: replace them). Returns the exit code (0). Raises FileNotFoundError
    when there is no raw snapshot."""
    spec = FeatureSpec.from_settings(settings)
    if not spec.has_history:
        print("materialize: contract.entity is null: no history features, nothing to store")
        return 0
    store = open_store(settings.serving.feature_store, spec, timeout_seconds=30)
    try:
        if not force and store.count():  # a store built for another layout says so here
            print(
                f"materialize: {settings.serving.feature_store} already holds {store.count():,} events; "
                "use --force to replace them"
            )
            return 0
        raw = storage.read_parquet(Layout(settings).raw_table, columns=spec.history_columns)
        store.seed(raw)
        print(f"materialize: {len(raw):,} events → {settings.serving.feature_store}")
    finally:
        store.close()
    return 0
