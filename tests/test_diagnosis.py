"""The pre-training data diagnosis (crossrec_lit.diagnosis): counts, the co-occurrence lift, and
that it never reads the test part."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from crossrec_lit.data import CrossDomainDataModule, InteractionDataModule, InteractionTable, Synthetic, TableSource
from crossrec_lit.diagnosis import VERDICTS, diagnose_transfer, diagnosis_markdown
from crossrec_lit.errors import CrossRecError


def _hand_frame() -> pd.DataFrame:
    """Source store S, target store T; rows in purchase order (position) per user and store.

    u1: S s1 s2       | T t1 t2 t3 t4  -> T train t1 t2, valid t3, test t4
    u2: S s1          | T t1 t2 t5     -> T train t1,    valid t2, test t5
    u3: -             | T t2 t3 t1     -> T train t2,    valid t3, test t1
    u4: S s1 s2 s3    | -
    u5: S s3 s4 s5    | T t3 t4        -> T train t3,              test t4 (two purchases: no valid)
    """
    rows = []
    for user, domain, items in [
        ("u1", "T", ["t1", "t2", "t3", "t4"]),
        ("u2", "T", ["t1", "t2", "t5"]),
        ("u3", "T", ["t2", "t3", "t1"]),
        ("u5", "T", ["t3", "t4"]),
        ("u1", "S", ["s1", "s2"]),
        ("u2", "S", ["s1"]),
        ("u4", "S", ["s1", "s2", "s3"]),
        ("u5", "S", ["s3", "s4", "s5"]),
    ]:
        rows += [{"user": user, "item": item, "domain": domain, "position": p} for p, item in enumerate(items)]
    return pd.DataFrame(rows)


def _hand_module(**kwargs) -> CrossDomainDataModule:
    table = InteractionTable.from_frame(_hand_frame(), domain_col="domain", position_col="position")
    return CrossDomainDataModule(TableSource(table), "S", "T", split="leave_one_out", **kwargs)


def _synthetic(domain_shift, split="leave_one_out", **kwargs) -> CrossDomainDataModule:
    source = Synthetic(n_users=600, n_items=(200, 150), overlap=0.6, dim=8, interactions_per_user=(10, 8), domain_shift=domain_shift, seed=3)
    return CrossDomainDataModule(source, "A", "B", split=split, **kwargs)


def test_counts_on_a_hand_checkable_frame():
    d = diagnose_transfer(_hand_module(), k=3)
    assert d["applies"] is True and d["source"] == "S" and d["target"] == "T" and d["split"] == "leave_one_out" and d["k"] == 3
    assert d["source_train_users"] == 4  # u1 u2 u4 u5
    assert d["target_train_users"] == 4  # u1 u2 u3 u5
    assert d["shared_users"] == 3  # u1 u2 u5 (u3: no S, u4: no T)
    assert d["shared_share_of_target"] == pytest.approx(3 / 4)
    # S purchases of u1 u2 u5: 2 1 3; T training purchases: 2 1 1
    assert d["shared_source_interactions_median"] == 2 and d["shared_source_interactions_mean"] == pytest.approx(2.0)
    assert d["shared_target_interactions_median"] == 1 and d["shared_target_interactions_mean"] == pytest.approx(4 / 3)
    assert d["valid_users"] == 3  # u1 u2 u3
    assert d["valid_users_with_source"] == 2  # u1 u2
    # target training counts t1 2, t2 2, t3 1, t4 0, t5 0; training items masked:
    # u1 (valid t3) ranks t3 first, u2 (valid t2) ranks t2 first, u3 (valid t3) ranks t1, t3: second place
    second = 1 / math.log2(3)
    assert d["ndcg_popularity"] == pytest.approx((1 + 1 + second) / 3)
    # co-occurrence: u1 and u2 find their item first as well; u3 has no S purchase and gets
    # overlap popularity (t1 2, t2 1, t3 1 among u1 u2 u5): t3 second again
    assert d["ndcg_cooccurrence"] == pytest.approx((1 + 1 + second) / 3)
    assert d["ndcg_overlap_popularity"] == pytest.approx((1 + 1 + second) / 3)
    assert d["lift_vs_popularity"] == pytest.approx(1.0)
    assert d["ndcg_popularity_with_source"] == pytest.approx(1.0) and d["ndcg_cooccurrence_with_source"] == pytest.approx(1.0)
    assert math.isnan(d["p_vs_popularity"])  # no user differs: the test is undefined
    assert d["verdict"] == "none" and "ties with popularity" in d["interpretation"]
    json.dumps(d)  # plain values, ready for a run record


def test_strong_shared_taste_shows_lift():
    d = diagnose_transfer(_synthetic(domain_shift=0.1))
    assert d["verdict"] == "signal"
    assert d["lift_vs_popularity_with_source"] > 1.3 and d["p_vs_popularity_with_source"] < 0.05
    assert d["lift_vs_popularity"] > 1.1
    assert d["interpretation"].startswith("Co-occurrence beats popularity") and "the cross-store signal is there" in d["interpretation"]
    md = diagnosis_markdown(d)
    assert md.startswith("## Data diagnosis\n") and "the cross-store signal is there" in md and "Rule: " in md
    assert f"{d['shared_users']:,}" in md and f"{d['ndcg_cooccurrence']:.4f}" in md


def test_independent_tastes_show_no_lift():
    d = diagnose_transfer(_synthetic(domain_shift="independent"))
    assert d["lift_vs_popularity_with_source"] < 1.05
    assert d["verdict"] == "none"
    assert "expect popularity or overlap popularity to be hard to beat" in d["interpretation"]


def test_cold_start_validation_users_are_all_shared():
    d = diagnose_transfer(_synthetic(domain_shift=0.1, split="cold_start", cold_start_share=0.2, n_folds=5, cold_start_fold=0, cold_valid_share=0.1))
    assert d["valid_users"] > 0 and d["valid_users_with_source"] == d["valid_users"]
    assert d["ndcg_cooccurrence"] == d["ndcg_cooccurrence_with_source"]
    assert "for the" not in d["interpretation"]  # no subset to name
    assert "the same on the" not in diagnosis_markdown(d)


def test_the_test_part_is_never_read():
    dm = _synthetic(domain_shift=0.1)
    idx = dm.index

    def refuse_test(original):
        def wrapped(domain, parts="train"):
            named = (parts,) if isinstance(parts, str) else tuple(parts)
            if "test" in named:
                raise AssertionError(f"the diagnosis read the test part of {domain}")
            return original(domain, parts)

        return wrapped

    # every array, user list and count goes through _mask; matrices may come from a cache
    idx._mask = refuse_test(idx._mask)
    idx.matrix = refuse_test(idx.matrix)
    with pytest.raises(AssertionError, match="test part"):
        dm.eval_batches("test")  # the guard is live
    d = diagnose_transfer(dm)
    assert d["verdict"] == "signal"


def test_no_shared_customers_is_said_not_raised():
    dm = _synthetic(domain_shift=0.1, drop_shared_users=True, min_overlap=0)
    d = diagnose_transfer(dm)
    assert d["applies"] is True and d["shared_users"] == 0 and d["verdict"] == "no_shared_users"
    assert math.isnan(d["shared_share_of_target"]) is False and d["shared_share_of_target"] == 0.0
    assert not math.isnan(d["ndcg_popularity"])  # the floor is still given
    md = diagnosis_markdown(d)
    assert "No customer has training purchases in both A and B" in md and "Rule:" not in md


def test_one_store_and_source_evaluation_say_it_does_not_apply():
    single = diagnose_transfer(InteractionDataModule(Synthetic(n_users=300, n_items=(100, 80), seed=1), "B"))
    assert single["applies"] is False and single["verdict"] == "not_applicable" and single["source"] is None
    assert single["valid_users"] > 0 and single["ndcg_popularity"] > 0
    assert "no cross-store diagnosis applies" in single["interpretation"]
    assert "no cross-store diagnosis applies" in diagnosis_markdown(single)

    pretrain = diagnose_transfer(_synthetic(domain_shift=0.1, eval_domain="source"))
    assert pretrain["applies"] is False and "no cross-store diagnosis applies" in pretrain["interpretation"]


def test_no_validation_part_is_not_measured():
    d = diagnose_transfer(_synthetic(domain_shift=0.1, split="cold_start", cold_valid_share=0.0))
    assert d["valid_users"] == 0 and d["verdict"] == "not_measured"
    assert math.isnan(d["ndcg_cooccurrence"]) and "no validation users" in d["interpretation"]
    assert "Data diagnosis" in diagnosis_markdown(d)


def test_every_verdict_is_known_and_bad_k_is_refused():
    assert diagnose_transfer(_hand_module(), k=3)["verdict"] in VERDICTS
    with pytest.raises(CrossRecError, match="positive integer"):
        diagnose_transfer(_hand_module(), k=0)
    with pytest.raises(CrossRecError, match="DataModule"):
        diagnose_transfer(object())
    heading = diagnosis_markdown(diagnose_transfer(_hand_module(), k=3), heading_level=3)
    assert heading.startswith("### Data diagnosis\n")
    assert np.isfinite(diagnose_transfer(_hand_module(), k=3)["ndcg_popularity"])
