"""Edits to params.yaml that keep the people's comments and layout (YAML round-trips lose them).

Only the retraining flow writes params: it moves the ingest window. The edit replaces two
values in place and the file is replaced atomically, so DVC sees a params change and a reader
never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from pipelines.config import load_settings


def set_ingest_window(path: Path, start: dt.date, end: dt.date) -> None:
    text = path.read_text()
    block = re.search(r"^ingest:\n((?:[ \t]+.*\n|[ \t]*\n)*)", text, re.M)
    if block is None:
        raise ValueError(f"{path} has no top-level 'ingest:' section to move")
    body = block.group(1)
    for key, value in (("start", start), ("end", end)):
        body, n = re.subn(rf"^([ \t]+{key}:[ \t]*)[^#\n]*?([ \t]*(?:#.*)?)$", rf"\g<1>'{value.isoformat()}'\g<2>",
                          body, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"{path}: ingest.{key} not found")
    new = text[:block.start(1)] + body + text[block.end(1):]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    load_settings(tmp)  # refuse to install a file that no longer parses
    os.replace(tmp, path)
