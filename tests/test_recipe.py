"""crossrec_lit.recipe: the seed's recipe on one pair of stores, as the algorithm chapter runs it."""

from __future__ import annotations

import math

import pytest

from crossrec_lit.data import Synthetic
from crossrec_lit.recipe import TransferRecipe
from crossrec_lit.training import checkpoint_epoch


def test_recipe_runs_every_step_and_reports_the_gain(tmp_path):
    stores = Synthetic(n_users=600, n_items=(200, 150), overlap=0.6, interactions_per_user=(10, 8), seed=3)
    recipe = TransferRecipe(tmp_path, embedding_dim=8, lr=0.02, epochs=4, freeze_epochs=2, patience=2, data={"split": "cold_start", "batch_size": 256})
    out = recipe.run(stores, seed=0, weight=1.0)
    assert set(out) == {"transfer", "target_only", "gain", "guard_fired", "guard_baseline", "guard_curve", "source_seconds", "transfer_seconds", "target_only_seconds", "n_test_users", "n_shared"}
    # the guard watched every validation of the transfer model, against target-only MF's best
    assert out["guard_curve"] and all(0.0 <= score <= 1.0 for _, score in out["guard_curve"])
    assert 0.0 <= out["guard_baseline"] <= 1.0
    assert 0.0 <= out["transfer"] <= 1.0 and 0.0 <= out["target_only"] <= 1.0
    assert out["gain"] == pytest.approx(out["transfer"] - out["target_only"])
    assert isinstance(out["guard_fired"], bool) and out["n_test_users"] > 0 and out["n_shared"] > 0
    assert all(math.isfinite(out[k]) and out[k] > 0 for k in ("source_seconds", "transfer_seconds", "target_only_seconds"))
    # three fits, each in its own folder, each kept at its best validation epoch; the transfer model
    # cannot stop before its customer vectors are released (min_epochs = freeze_epochs + 1)
    kept = sorted(tmp_path.glob("recipe-run*/best.ckpt"))
    assert len(kept) == 3
    assert all(1 <= checkpoint_epoch(path) <= recipe.epochs for path in kept)
    # a call's data changes stay with that call
    assert recipe.data == {"split": "cold_start", "batch_size": 256}


def test_copies_of_a_recipe_never_share_a_checkpoint_folder(tmp_path):
    import dataclasses

    recipe = TransferRecipe(tmp_path)
    other = dataclasses.replace(recipe, lr=0.001)  # a fresh counter over the same folder
    folders = [recipe.new_run(), other.new_run(), recipe.new_run(), other.new_run()]
    assert len(set(folders)) == 4 and all(f.is_dir() for f in folders)
