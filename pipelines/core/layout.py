"""Where every artifact lives: one definition of each file name, for its writers and its readers.

`Layout(settings)` turns the configured directories into the URLs of the files in them. Nothing
else in the project spells these names; `dvc.yaml` spells the ones DVC tracks, and a unit test
checks that the two agree. Pure string work: no I/O.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from pipelines.config import Settings


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a local path or a URL (`s3://b/p`), without doubled slashes."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


@dataclass(frozen=True)
class Layout:
    """The URL of every artifact the pipeline writes, from the settings' locations."""

    settings: Settings

    # -- DVC stage outputs (dvc.yaml names the same files) --------------------------------
    @property
    def raw_table(self) -> str:
        """ingest: the snapshot of the ingest window, labels joined (Parquet)."""
        return join(self.settings.paths.raw, "transactions.parquet")

    @property
    def manifest(self) -> str:
        """ingest: where the snapshot came from, its size and content hash (JSON)."""
        return join(self.settings.paths.raw, "manifest.json")

    @property
    def validation_summary(self) -> str:
        """validate: the gate's verdict per expectation (JSON); featurize refuses a failed one."""
        return join(self.settings.paths.validation, "summary.json")

    @property
    def validation_docs(self) -> str:
        """validate: the Great Expectations Data Docs site (a directory)."""
        return join(self.settings.paths.validation, "docs")

    @property
    def train_table(self) -> str:
        """featurize: labelled feature rows before the split time (Parquet: one file, or a
        dataset directory when `compute.engine` is dask; `storage.read_parquet` reads both)."""
        return join(self.settings.paths.features, "train.parquet")

    @property
    def test_table(self) -> str:
        """featurize: labelled feature rows from the split time on (Parquet, as `train_table`)."""
        return join(self.settings.paths.features, "test.parquet")

    def model(self, family: str) -> str:
        """train: one fitted candidate family."""
        return join(self.settings.paths.models, f"{family}.zip")

    @property
    def tuned(self) -> str:
        """tune: the best parameters found per family, overrides of params' sections (JSON;
        `{}` when tune.trials is 0)."""
        return join(self.settings.paths.tuning, "params.json")

    @property
    def study(self) -> str:
        """tune: the Optuna study, one per family and data/search fingerprint (SQLite file)."""
        return join(self.settings.paths.tuning, "study.db")

    def tuning_plot(self, family: str, name: str) -> str:
        """tune: one family's Optuna plot (`history`, `importance`; self-contained HTML)."""
        return join(self.settings.paths.tuning, f"{family}-{name}.html")

    @property
    def tuning_script(self) -> str:
        """tune: plotly's script, which the HTML plots load from beside them (plotly's
        `include_plotlyjs="directory"` name; no CDN)."""
        return join(self.settings.paths.tuning, "plotly.min.js")

    @property
    def tuning_metrics(self) -> str:
        """tune: per family, the params-as-written and best validation scores, the gain, the
        trials run and pruned, and the seconds it took (DVC metrics)."""
        return join(self.settings.paths.metrics, "tuning.json")

    @property
    def selection(self) -> str:
        """train: each candidate's validation score and the one chosen to package (JSON)."""
        return join(self.settings.paths.models, "selection.json")

    @property
    def evaluation(self) -> str:
        """evaluate: the chosen candidate's test metrics, every candidate's under `candidates`
        (DVC metrics)."""
        return join(self.settings.paths.metrics, "evaluate.json")

    @property
    def slices(self) -> str:
        """evaluate: metrics per value of each `evaluate.slice_by` column (JSON)."""
        return join(self.settings.paths.metrics, "slices.json")

    def plot(self, family: str, name: str) -> str:
        """evaluate: one DVC plot (`roc`, `pr`, `calibration`, `importance`; CSV) of one
        candidate: a directory per plot, so dvc.yaml names no family."""
        return join(self.settings.paths.plots, name, f"{family}.csv")

    @property
    def package(self) -> str:
        """package: the model version and bento it saved (JSON)."""
        return self.settings.paths.package

    # -- outside DVC -----------------------------------------------------------------------
    @property
    def release(self) -> str:
        """`make bento`: the bento a deploy ships and the champion it carries (JSON)."""
        folder = posixpath.dirname(self.settings.paths.package)
        return join(folder, "release.json") if folder else "release.json"

    @property
    def drift_state(self) -> str:
        """What the drift check remembers between runs (persistence, cooldown; JSON)."""
        return join(self.settings.drift.reports, "state.json")

    def drift_run(self, stamp: str) -> str:
        """The directory of one drift check, named by its UTC time (`YYYYmmddTHHMMSSZ`)."""
        return join(self.settings.drift.reports, stamp)

    def drift_report(self, stamp: str) -> str:
        """One drift check's Evidently report (self-contained HTML)."""
        return join(self.drift_run(stamp), "report.html")

    def drift_summary(self, stamp: str) -> str:
        """One drift check's result and verdict (JSON)."""
        return join(self.drift_run(stamp), "summary.json")
