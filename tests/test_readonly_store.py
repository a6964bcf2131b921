"""Reading a model from a local store writes nothing into the store's folder (a read-only store, a shared mount,
a backup must work): MLflow's download gets a folder of our own."""

from __future__ import annotations

from pathlib import Path

from helpers.shipping import champion_of


def _files(root: Path) -> dict[str, tuple[int, float]]:
    """Every artifact file under the store (the database itself is written by reaping: left out)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith("mlflow.db")
    }


def test_resolving_a_registered_or_run_model_writes_nothing_into_the_store(store, monkeypatch):
    from dermsweep.tracking.model_ref import resolve

    champion = champion_of(store, "readonly-check", monkeypatch)
    before = _files(store.root)
    for uri in (champion, f"runs:/{store.a['trials'][1]}/model"):
        ref = resolve(uri)
        assert ref.local_dir is not None and store.root not in ref.local_dir.parents, ref.local_dir
        assert ref.keras_path is not None and ref.keras_path.is_file()
    assert _files(store.root) == before  # no registered_model_meta (or anything else) written there
