"""featurize: point-in-time features for every event, then a time-based train/test split.

History features are computed over all ingested events (labelled or not: an unlabelled
transaction is still part of its card's history); only labelled rows go to train and test.
"""

from __future__ import annotations

import pandas as pd

from pipelines.config import Settings
from pipelines.core.features import FeatureSpec, build_features
from pipelines.core.layout import Layout
from pipelines.io import manifest, storage


def require_passed_gate(settings: Settings) -> None:
    """The data gate is blocking even when a stage is called outside DVC (e.g. from a flow).

    Raises RuntimeError naming the summary when the gate did not run or did not pass."""
    url = Layout(settings).validation_summary
    try:
        summary = storage.read_json(url)
    except FileNotFoundError:
        raise RuntimeError(
            f"no validation summary at {url}: run the validate stage first"
        ) from None
    if not summary.get("success"):
        raise RuntimeError(
            f"the data gate failed (see {url}); refusing to build features on that data"
        )


def split_time(settings: Settings) -> pd.Timestamp:
    """The first instant of the test period: `split.test` before the end of the window ingest
    resolved (its manifest)."""
    _, end = manifest.window(settings)
    return settings.split.test.before(end)


def featurize(raw: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): the labelled rows with their features, split at `split_time`, each sorted by
    (timestamp, id); columns: id, timestamp, entity, target, then `FeatureSpec.names`."""
    c = settings.contract
    spec = FeatureSpec.from_settings(settings)
    feats = build_features(raw, spec)
    meta = [col for col in (c.id, c.timestamp, c.entity, c.target) if col]
    table = pd.concat([raw[meta].reset_index(drop=True), feats.reset_index(drop=True)], axis=1)
    table = table[table[c.target].notna()].sort_values([c.timestamp, c.id], ignore_index=True)
    table[c.target] = table[c.target].astype("int8")
    cut = split_time(settings)
    return table[table[c.timestamp] < cut], table[table[c.timestamp] >= cut]


def run(settings: Settings) -> None:
    """Write the train and test tables. Raises ValueError when the split leaves either empty."""
    require_passed_gate(settings)
    layout = Layout(settings)
    raw = storage.read_parquet(layout.raw_table)
    train, test = featurize(raw, settings)
    if train.empty or test.empty:
        raise ValueError(
            f"time split at {split_time(settings)} leaves train={len(train)} test={len(test)} labelled rows;"
            " adjust ingest.window or split.test"
        )
    storage.write_parquet(train, layout.train_table)
    storage.write_parquet(test, layout.test_table)
    print(
        f"featurize: train {len(train):,} rows, test {len(test):,} rows (split at {split_time(settings)}) "
        f"→ {settings.paths.features}"
    )
