"""featurize: point-in-time features for every event, then a time-based train/test split.

History features are computed over all ingested events (labelled or not: an unlabelled
transaction is still part of its card's history); only labelled rows go to train and test.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipelines.config import Settings
from pipelines.core.features import FeatureSpec, build_features
from pipelines.core.layout import Layout
from pipelines.io import compute, manifest, storage
from pipelines.io.compute import Engine, Local


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


def labelled_features(events: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The labelled rows of `events` (which hold every event of their entities) with their
    features: columns id, timestamp, entity, target (int8), then `spec.names`; `events`' order."""
    c = spec.contract
    feats = build_features(events, spec)
    meta = [col for col in (c.id, c.timestamp, c.entity, c.target) if col]
    table = pd.concat([events[meta].reset_index(drop=True), feats.reset_index(drop=True)], axis=1)
    table = table[table[c.target].notna()]
    return table.astype({c.target: "int8"})


def featurize(raw: Any, settings: Settings, engine: Engine | None = None) -> tuple[Any, Any]:
    """(train, test): the labelled rows with their features, split at `split_time`, each sorted by
    (timestamp, id); columns: id, timestamp, entity, target, then `FeatureSpec.names`.

    `raw` is a pandas frame, or a dask frame with `engine` a `compute.Dask`: the features are
    computed per part holding whole entities, so each row sees its entity's full history."""
    engine = engine or Local()
    c = settings.contract
    spec = FeatureSpec.from_settings(settings)
    table = engine.per_entity(raw, labelled_features, c.entity, spec)
    table = engine.sort(table, [c.timestamp, c.id], like=raw[c.timestamp])
    cut = split_time(settings)
    return table[table[c.timestamp] < cut], table[table[c.timestamp] >= cut]


def run(settings: Settings) -> None:
    """Write the train and test tables on the `compute` engine. Raises ValueError when the split
    leaves either empty."""
    require_passed_gate(settings)
    layout, c = Layout(settings), settings.contract
    cut = split_time(settings)
    with compute.engine(settings) as engine:
        raw = engine.read_parquet(layout.raw_table)
        # The rows each side of the split are the labelled raw rows: counted before any feature
        # is computed, so an empty side fails at once on any engine.
        labelled = raw[c.target].notnull()  # dask has no notna
        n_train, n_test = engine.values(
            (labelled & (raw[c.timestamp] < cut)).sum(),
            (labelled & (raw[c.timestamp] >= cut)).sum(),
        )
        if not n_train or not n_test:
            raise ValueError(
                f"time split at {cut} leaves train={n_train} test={n_test} labelled rows;"
                " adjust ingest.window or split.test"
            )
        train, test = featurize(raw, settings, engine)
        rows = engine.write_parquet({layout.train_table: train, layout.test_table: test})
    print(
        f"featurize: train {rows[layout.train_table]:,} rows, test {rows[layout.test_table]:,} rows "
        f"(split at {cut}, {engine.tag}) → {settings.paths.features}"
    )
