"""The model remote's merge rules: nothing already recorded is lost, the newer champion wins."""

from __future__ import annotations

import json

from pipelines.io import model_remote as remote


def champion(tag: str, since: str) -> dict:
    return {"tag": tag, "since": since, "reason": "test"}


def test_the_newer_champion_record_wins_whichever_side_it_is_on() -> None:
    old, new = (
        champion("m:1", "2026-03-01T10:00:00.000+00:00"),
        champion("m:2", "2026-03-02T09:00:00.000+00:00"),
    )
    assert remote.newer_champion(old, new) == new
    assert remote.newer_champion(new, old) == new
    assert remote.newer_champion(None, old) == old and remote.newer_champion(old, None) == old
    assert remote.newer_champion(None, None) is None


def line(at: str, event: str) -> str:
    return json.dumps({"at": at, "event": event})


def test_merged_history_keeps_every_line_once_in_time_order() -> None:
    a = [line("2026-03-01T00:00", "promoted"), line("2026-03-03T00:00", "refused")]
    b = [line("2026-03-01T00:00", "promoted"), line("2026-03-02T00:00", "promoted"), ""]
    merged = remote.merged_history(a, b)
    assert [json.loads(x)["at"][:10] for x in merged] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert remote.merged_history(a, []) == a and remote.merged_history([], []) == []


def test_archive_keys_round_trip_to_tags() -> None:
    for tag, suffix in (
        ("fraud-model:abc123", remote.MODEL_SUFFIX),
        ("fraud_service:x9", remote.BENTO_SUFFIX),
    ):
        key = remote.archive_key(tag, suffix)
        assert key.endswith(suffix)
        assert remote.tag_of(f"bucket/prefix/models/{key}", suffix) == tag
