"""Pipeline scaling: wall time and peak RSS per `dvc repro` stage at 100k and 1M transactions,
on each compute engine (params `compute`).

    python bench/pipeline_scaling.py [--rows 100000 1000000 5000000] [--engines local dask]
                                     [--keep DIR]

Each size runs in a throwaway copy of the repo: simulate the source, then, per engine,
`dvc repro --force -s <stage>` for every stage in dvc.yaml's order (so each stage is timed on its
own, DVC overhead included; package, which no engine changes, on the first engine only), then
the LightGBM fit alone on the same training features, in a process of its own. Peak RSS is the largest
single process: the stage's, or one of the Dask workers it started (a LocalCluster of
`compute.workers` processes). The last column is the whole pipeline over the fit alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# dvc.yaml's stages in its order (a stage added there is timed here too).
STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
ENV = {
    **os.environ,
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
}


# Linux carries a process's peak RSS across fork and exec (the forked address space's high-water
# mark), so a command forked from this process, once it holds a repo's tables, would report at
# least this process's footprint. Each command is started by this small launcher instead: its
# children start from its few MB, and it reports their peak (KiB) to the file it is given.
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of a command and the descendants it waited for."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, rss.name, *cmd],
            cwd=cwd,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wall = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout.decode()[-3000:]}")
        return wall, int(Path(rss.name).read_text()) / 1024**2


def sized_repo(dest: Path, rows: int) -> Path:
    """The tests' throwaway repo copy, simulating `rows` transactions over 90 days, all ingested."""
    from tests.conftest import make_repo

    days = 90
    start = dt.date.fromisoformat(
        str(yaml.safe_load((ROOT / "params.yaml").read_text())["simulate"]["start"])
    )
    return make_repo(
        dest,
        {
            "simulate": {"days": days, "tx_per_day": rows // days, "cards": max(1000, rows // 250)},
            "ingest": {"start": str(start), "end": str(start + dt.timedelta(days=days))},
        },
    )


def fit_alone(repo: Path) -> float:
    """The LightGBM fit the train stage does, alone, on the same features and params (in its own
    process: this one stays small, see LAUNCHER)."""
    out = subprocess.run(
        [sys.executable, "-c", FIT_ALONE, str(repo)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[-1])


FIT_ALONE = """
import sys, time
from pathlib import Path
import numpy as np
from pipelines.config import load_settings
from pipelines.core.features import FeatureSpec
from pipelines.core.model import fit
from pipelines.io import storage
repo = Path(sys.argv[1])
s = load_settings(repo / "params.yaml").located(repo)
train = storage.read_parquet(storage.join(s.paths.features, "train.parquet"))
spec = FeatureSpec.from_settings(s)
y = train[s.contract.target].to_numpy(dtype=np.int64)
start = time.perf_counter()
fit("lightgbm", train, y, spec, s.train.lightgbm, s.train.seed)
print(time.perf_counter() - start)
"""


def with_engine(repo: Path, engine: str) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["compute"]["engine"] = engine
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def bench(rows: int, engines: list[str], workdir: Path) -> list[dict]:
    repo = sized_repo(workdir / f"repo-{rows}", rows)
    timed([sys.executable, "-m", "pipelines", "simulate"], repo)
    results = []
    for n, engine in enumerate(engines):
        with_engine(repo, engine)
        result: dict = {"rows": rows, "engine": engine}
        for stage in STAGES if n == 0 else STAGES[:-1]:
            result[stage] = timed(["dvc", "repro", "--force", "-s", stage], repo)
            print(
                f"  {rows:>9,} {engine:<6} {stage:<10} {result[stage][0]:7.1f} s"
                f"  {result[stage][1]:5.2f} GB",
                flush=True,
            )
        result["fit"] = fit_alone(repo)
        results.append(result)
    return results


def table(results: list[dict]) -> str:
    head = [
        "rows",
        "engine",
        *[f"{s} s" for s in STAGES],
        "repro s",
        "peak RSS GB",
        "fit alone s",
        "repro/fit",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ran = [s for s in STAGES if s in r]
        total = sum(r[s][0] for s in ran)
        peak = max(r[s][1] for s in ran)
        cells = [
            f"{r['rows']:,}",
            r["engine"],
            *[f"{r[s][0]:.1f}" if s in r else "-" for s in STAGES],
            f"{total:.1f}",
            f"{peak:.2f}",
            f"{r['fit']:.1f}",
            f"{total / r['fit']:.2f}x",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--engines", nargs="+", default=["local", "dask"], choices=["local", "dask"])
    p.add_argument("--keep", type=Path, help="keep the work directories here")
    args = p.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = [r for n in args.rows for r in bench(n, args.engines, work)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        "\nPipeline scaling (dvc repro --force -s <stage>, each stage timed alone; package includes"
        " the bento build; repro s sums the stages that ran)"
    )
    print(table(results))


if __name__ == "__main__":
    main()
