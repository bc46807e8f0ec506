"""Portable, verified model artifacts (core/artifact.py, io/registry.py): every family saves in
its framework's own format with a JSON contract and no pickle; the same model gives the same
bytes; an edited, truncated or untrusted artifact is refused by name, locally, in the model store
and after a pull from a remote, and the champion stays what it was."""

from __future__ import annotations

import functools
import io
import json
import pickle
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import parse_settings
from pipelines.core import artifact
from pipelines.core.families import FAMILIES, portable
from pipelines.core.families.portable import zip_members
from pipelines.core.model import fit
from pipelines.io import model_files, model_remote, registry
from tests.conftest import ROOT, run
from tests.model.test_families import SMALL, probe_of, small_world

NATIVE = {
    "lightgbm": {"lightgbm.txt"},
    "xgboost": {"xgboost.ubj"},
    "logistic": {"estimator.skops"},
    "hist_gradient_boosting": {"estimator.skops"},
    "sklearn": {"estimator.skops"},
    "blend": {"lightgbm/lightgbm.txt", "logistic/estimator.skops"},  # its members' own files
}


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return small_world()


def small_model(family: str, world, seed: int = 3):  # type: ignore[no-untyped-def]
    spec, feats, y, _ = world
    s = parse_settings({**SMALL, "train": {"lightgbm": {"n_estimators": 40}}})
    return fit(family, feats, y, spec, s.train.params_of(family), seed)


def members(data: bytes) -> dict[str, bytes]:
    z = zipfile.ZipFile(io.BytesIO(data))
    return {name: z.read(name) for name in z.namelist()}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_saves_its_own_format_and_no_pickle_with_stable_bytes(
    family: str, world
) -> None:  # type: ignore[no-untyped-def]
    model = small_model(family, world)
    data = model_files.to_bytes(model)
    files = members(data)
    assert set(files) == {artifact.CONTRACT, *NATIVE[family]}
    assert not any(content[:1] == b"\x80" for content in files.values())  # no pickle anywhere
    contract = artifact.describe(data)
    assert contract["family"] == family and contract["format"] == artifact.FORMAT
    assert contract["categories"] == model.categories and contract["numeric"] == model.numeric
    if family == "lightgbm":
        assert files["lightgbm.txt"].startswith(b"tree\n")  # LightGBM's own text format
    # Loaded and saved again: the same bytes (stable across objects, ids and clocks).
    loaded = artifact.unpack(data, "m.zip")
    assert model_files.to_bytes(loaded) == data
    probe = probe_of(world[1])
    np.testing.assert_allclose(
        loaded.predict_proba(probe), model.predict_proba(probe), rtol=0, atol=1e-12
    )


def test_an_edited_or_truncated_archive_is_refused_naming_the_member(world) -> None:  # type: ignore[no-untyped-def]
    data = model_files.to_bytes(small_model("lightgbm", world))
    files = members(data)
    edited = files["lightgbm.txt"].replace(b"leaf_value=", b"leaf_value=9", 1)
    tampered = zip_members({**files, "lightgbm.txt": edited})
    with pytest.raises(ValueError, match=r"m\.zip: member lightgbm\.txt does not match"):
        artifact.unpack(tampered, "m.zip")
    with pytest.raises(ValueError, match=r"m\.zip is not a readable model archive"):
        artifact.unpack(data[: len(data) // 2], "m.zip")
    alien = zip_members(
        {
            **files,
            artifact.CONTRACT: files[artifact.CONTRACT].replace(
                b'"family": "lightgbm"', b'"family": "catboost"'
            ),
        }
    )
    with pytest.raises(ValueError, match="unknown model family 'catboost'"):
        artifact.unpack(alien, "m.zip")
    contract = json.loads(files[artifact.CONTRACT])
    lacking = {k: v for k, v in contract.items() if k != "state"}
    with pytest.raises(ValueError, match=r"m\.zip: contract\.json lacks \['state'\]"):
        artifact.unpack(
            zip_members({**files, artifact.CONTRACT: json.dumps(lacking).encode()}), "m.zip"
        )
    without_member = {artifact.CONTRACT: files[artifact.CONTRACT]}
    with pytest.raises(ValueError, match=r"m\.zip: a member its contract lists cannot be read"):
        artifact.unpack(zip_members(without_member), "m.zip")


def test_a_teams_own_estimator_loads_only_when_params_name_its_package_and_builtins_never(
    world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """skops refuses types nobody trusted. A team's class loads because the operator's params
    name its package (`portable.trust`, which runtime.bootstrap calls), never because the file
    says so; a function from builtins (`exec` wrapped in a transformer) is refused whatever the
    params say."""
    (tmp_path / "team_estimators.py").write_text(
        textwrap.dedent(
            """
            from sklearn.tree import DecisionTreeClassifier

            class Scorecard(DecisionTreeClassifier):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec, feats, y, _ = world
    s = parse_settings(
        {
            "train": {
                "sklearn": {"estimator": "team_estimators:Scorecard", "params": {"max_depth": 4}}
            }
        }
    )
    assert s.train.sklearn.package == "team_estimators"
    data = model_files.to_bytes(fit("sklearn", feats, y, spec, s.train.sklearn, 1))
    try:
        portable.trust([])
        with pytest.raises(
            ValueError, match=r"team\.zip: estimator\.skops holds types .*Scorecard"
        ):
            artifact.unpack(data, "team.zip")
        portable.trust([s.train.sklearn.package])
        loaded = artifact.unpack(data, "team.zip")
        assert type(loaded.estimator.estimator).__name__ == "Scorecard"

        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        hostile = make_pipeline(FunctionTransformer(functools.partial(exec, "1")))
        with pytest.raises(ValueError, match=r"evil\.skops holds types .*builtins\.exec"):
            portable.loads(portable.dumps(hostile), "evil.skops")
    finally:
        portable.trust([])


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def in_store(home: Path, code: str, check: bool = True) -> subprocess.CompletedProcess:
    """`code` in a process of its own over the model store at `home` (BentoML fixes its store
    at first use, so each store gets its own process)."""
    script = "from pipelines.io import model_files, model_remote, registry\n" + textwrap.dedent(
        code
    )
    return run([sys.executable, "-c", script], ROOT, check=check, env={"BENTOML_HOME": str(home)})


def store_two_versions(world, tmp_path: Path, home: Path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A LightGBM champion and an XGBoost challenger in the store at `home`: their tags."""
    for family in ("lightgbm", "xgboost"):
        model_files.save(small_model(family, world), str(tmp_path / f"{family}.zip"))
    out = in_store(
        home,
        f"""
        champion = registry.save(model_files.load({str(tmp_path / "lightgbm.zip")!r}), {{}})
        registry.promote(champion, "test: first")
        print(champion, registry.save(model_files.load({str(tmp_path / "xgboost.zip")!r}), {{}}))
        """,
    )
    champion, challenger = out.stdout.split()
    return champion, challenger


def test_the_store_refuses_a_tampered_artifact_and_the_champion_stays(
    world, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "store"
    champion, challenger = store_two_versions(world, tmp_path, home)
    name, version = challenger.split(":")
    tamper(home / "models" / name / version / registry.ARTIFACT)
    refused = in_store(home, f"registry.load({challenger!r})", check=False)
    assert refused.returncode != 0
    assert (
        f"model {challenger}: " in refused.stderr and "does not match the SHA-256" in refused.stderr
    )
    refused = in_store(home, f"registry.promote({challenger!r}, 'test: refused')", check=False)
    assert refused.returncode != 0 and "does not match the SHA-256" in refused.stderr
    kept = in_store(
        home, "print(registry.champion_tag(), registry.load(registry.champion_tag()).family)"
    )
    assert kept.stdout.split() == [champion, "lightgbm"]


def test_a_tampered_archive_on_the_remote_is_refused_after_pull(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A CI runner pulls the registry into an empty store: the champion's artifact, edited on the
    remote, is checked against the digest recorded at save time before the pointer is taken."""
    remote = tmp_path / "remote"
    champion, _ = store_two_versions(world, tmp_path, tmp_path / "a")
    in_store(tmp_path / "a", f"model_remote.push({str(remote)!r})")

    name, version = champion.split(":")
    archive = remote / "models" / name / f"{version}{model_remote.MODEL_SUFFIX}"
    with tarfile.open(archive) as t:
        entries = [(m, t.extractfile(m).read() if m.isfile() else b"") for m in t.getmembers()]  # type: ignore[union-attr]
    rewritten = io.BytesIO()
    with tarfile.open(fileobj=rewritten, mode="w:xz") as t:
        for m, content in entries:
            if m.name.endswith(registry.ARTIFACT):
                content = content[:-10]  # truncated in transit
                m.size = len(content)
            t.addfile(m, io.BytesIO(content) if m.isfile() else None)
    archive.write_bytes(rewritten.getvalue())

    pulled = in_store(tmp_path / "b", f"model_remote.pull({str(remote)!r})", check=False)
    assert pulled.returncode != 0
    assert f"model {champion}: " in pulled.stderr and "does not match the SHA-256" in pulled.stderr
    assert in_store(tmp_path / "b", "print(registry.champion_tag())").stdout.strip() == "None"

    archive.write_bytes(archive.read_bytes()[:-100])  # cut short: the archive itself unreadable
    pulled = in_store(tmp_path / "c", f"model_remote.pull({str(remote)!r})", check=False)
    assert f"remote archive {archive}" in pulled.stderr and "cannot be imported" in pulled.stderr


def test_versions_pickled_before_portable_archives_are_refused_until_migrate_converts_them(
    world, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """What a store written by the previous release holds: `model.pkl` with its SHA-256 label.
    Loading refuses it, naming the command; `registry migrate` converts it to a portable version
    with the same predictions and moves the champion; an edited pickle is never unpickled."""
    model = small_model("lightgbm", world)
    old = tmp_path / "old.pkl"
    old.write_bytes(pickle.dumps(model, protocol=5))
    probe = tmp_path / "probe.parquet"
    probe_of(world[1]).to_parquet(probe)
    code = f"""
        import hashlib, json, bentoml, pandas as pd
        from pipelines.io import storage
        data = open({str(old)!r}, "rb").read()

        def legacy(digest):
            labels = {{"family": "lightgbm", registry.DIGEST: digest}}
            with bentoml.models.create(registry.MODEL_NAME, labels=labels) as ref:
                open(ref.path_of(registry.LEGACY_ARTIFACT), "wb").write(data)
            return str(ref.tag)

        old = legacy(hashlib.sha256(data).hexdigest())
        storage.write_json(str(registry.champion_file()), {{"tag": old, "since": "2026-01-01"}})
        try:
            registry.load(old)
        except ValueError as err:
            print("REFUSED", str(err).replace(" ", "_"))
        converted = registry.migrate()
        new = converted[old]
        p = registry.load(new).predict_proba(pd.read_parquet({str(probe)!r}))
        print(new, registry.champion_tag(), ",".join(f"{{x:.12f}}" for x in p[:20]))
        print(registry.migrate() == {{}})  # once: nothing left to convert
        edited = legacy("0" * 64)
        try:
            registry.migrate()
        except ValueError as err:
            print("EDITED", str(err).replace(" ", "_"))
        """
    lines = in_store(tmp_path / "store", code).stdout.splitlines()
    assert lines[0].startswith("REFUSED") and "registry_migrate" in lines[0]
    new, champion, values = lines[1].split()
    assert champion == new
    expected = model.predict_proba(probe_of(world[1]))[:20]
    np.testing.assert_allclose([float(x) for x in values.split(",")], expected, atol=1e-11)
    assert lines[2] == "True"
    assert lines[3].startswith("EDITED") and "does_not_match_the_SHA-256" in lines[3]
