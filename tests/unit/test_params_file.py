"""Moving the ingest window edits params.yaml in place: values change, comments stay."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from pipelines.config import load_settings
from pipelines.io.params_file import set_ingest_window

ROOT = Path(__file__).resolve().parents[2]


def test_window_moves_and_everything_else_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    before = path.read_text()
    set_ingest_window(path, dt.date(2026, 2, 1), dt.date(2026, 5, 2))
    after = path.read_text()
    s = load_settings(path)
    assert (s.ingest.start, s.ingest.end) == (dt.date(2026, 2, 1), dt.date(2026, 5, 2))
    assert s.simulate.start == load_settings(ROOT / "params.yaml").simulate.start  # other 'start:' keys untouched
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(changed) == 2 and all("#" in b for a, b in changed if "#" in a)  # comments survive
    assert not list(tmp_path.glob(".*.tmp"))
