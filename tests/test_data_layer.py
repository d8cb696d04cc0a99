"""InteractionTable, Vocab, preprocessing and splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossrec_lit import CrossRecError
from crossrec_lit.data import (
    InteractionTable,
    Vocab,
    cold_start_split,
    deduplicate,
    implicit_threshold,
    k_core,
    leave_one_out,
    load_split,
    overlap_report,
    ratio_split,
    require_overlap,
    save_split,
    split_counts,
)


def table(rows, **kw) -> InteractionTable:
    return InteractionTable.from_frame(pd.DataFrame(rows, columns=["user", "item", *kw.pop("extra", [])]), **kw)


def test_ids_stay_strings_and_positions_follow_row_order():
    t = table([("007", "0123"), ("007", "0456"), ("8", "0123")], domain="D")
    assert t.frame["user"].tolist() == ["007", "007", "8"]
    assert t.frame["item"].tolist() == ["0123", "0456", "0123"]
    assert t.frame["position"].tolist() == [0, 1, 0]


def test_iso_dates_are_times_too():
    # a shop export with dates: read as Unix seconds (UTC), offsets applied, histories ordered by them
    t = table([("u1", "late", "2020-01-02"), ("u1", "early", "2020-01-01T23:00:00-02:00"), ("u1", "first", "2019-12-31")], extra=["when"], timestamp_col="when", domain="D")
    frame = t.frame.set_index("item")
    assert frame.loc["late", "timestamp"] == 1577923200 and frame.loc["early", "timestamp"] == 1577926800
    assert frame["position"].to_dict() == {"first": 0, "late": 1, "early": 2}
    # pandas datetimes are taken as they are
    dates = pd.DataFrame({"user": ["u1", "u1"], "item": ["b", "a"], "t": pd.to_datetime(["2020-01-02", "2020-01-01"])})
    assert InteractionTable.from_frame(dates, timestamp_col="t", domain="D").frame["timestamp"].tolist() == [1577923200, 1577836800]


def test_positions_follow_timestamps():
    t = table([("u", "a", 30), ("u", "b", 10), ("u", "c", 20)], domain="D", timestamp_col="ts", extra=["ts"])
    assert dict(zip(t.frame["item"], t.frame["position"])) == {"a": 2, "b": 0, "c": 1}


@pytest.mark.parametrize(
    "frame, kwargs, message",
    [
        (pd.DataFrame({"u": ["1"], "i": ["2"]}), dict(user_col="user", item_col="i"), "missing column"),
        (pd.DataFrame({"user": [], "item": []}), {}, "empty"),
        (pd.DataFrame({"user": ["1", None], "item": ["a", "b"]}), {}, "missing value"),
        (pd.DataFrame({"user": ["1"], "item": ["a"], "r": [np.nan]}), dict(rating_col="r"), "NaN or infinite"),
        (pd.DataFrame({"user": ["1"], "item": ["a"], "r": [np.inf]}), dict(rating_col="r"), "NaN or infinite"),
        (pd.DataFrame({"user": ["1"], "item": ["a"], "r": ["good"]}), dict(rating_col="r"), "not numeric"),
        (pd.DataFrame({"user": ["1"], "item": [""]}), {}, "empty string"),
    ],
)
def test_bad_tables_name_the_problem(frame, kwargs, message):
    with pytest.raises(CrossRecError, match=message) as info:
        InteractionTable.from_frame(frame, domain="D", **kwargs)
    assert "Fix:" in str(info.value) and "\n" not in str(info.value)


def test_extra_columns_are_refused():
    with pytest.raises(CrossRecError, match="unexpected column"):
        InteractionTable(pd.DataFrame({"user": ["1"], "item": ["a"], "domain": ["D"], "price": [3]}))


def test_unknown_domain_lists_the_known_ones():
    t = table([("1", "a")], domain="Toys")
    with pytest.raises(CrossRecError, match=r"unknown domain.*'Toyz'.*\['Toys'\]"):
        t.domain("Toyz")


def test_vocab_round_trip_and_unknown_ids():
    v = Vocab(["b", "a", "c", "a"])
    assert v.to_list() == ["a", "b", "c"]
    np.testing.assert_array_equal(v.encode(["c", "a"]), [2, 0])
    assert v.decode([1]).tolist() == ["b"]
    with pytest.raises(CrossRecError, match="unknown user"):
        v.encode(["z"], what="user")


def test_deduplicate_policies():
    t = table([("u", "a"), ("u", "b"), ("u", "a")], domain="D")
    assert deduplicate(t, "first").frame["item"].tolist() == ["a", "b"]
    assert deduplicate(t, "last").frame["item"].tolist() == ["b", "a"]
    assert len(deduplicate(t, "none")) == 3
    with pytest.raises(CrossRecError, match="duplicate"):
        deduplicate(t, "error")
    with pytest.raises(CrossRecError, match="unknown dedupe policy"):
        deduplicate(t, "random")


def test_implicit_threshold():
    t = table([("u", "a", 5), ("u", "b", 2), ("v", "a", 4)], domain="D", rating_col="r", extra=["r"])
    assert implicit_threshold(t, 4).frame["item"].tolist() == ["a", "a"]
    with pytest.raises(CrossRecError, match="no interaction"):
        implicit_threshold(t, 6)
    with pytest.raises(CrossRecError, match="needs ratings"):
        implicit_threshold(table([("u", "a")], domain="D"), 4)


def test_k_core_is_iterative_and_per_domain():
    # item "x" has 2 users, but removing user "c" (1 interaction) leaves it with 1
    rows = [("a", "x"), ("a", "y"), ("b", "y"), ("b", "x"), ("c", "z")]
    t = table(rows, domain="D")
    out = k_core(t, 2, 2)
    assert set(out.frame["user"]) == {"a", "b"} and set(out.frame["item"]) == {"x", "y"}
    with pytest.raises(CrossRecError, match="left domain"):
        k_core(t, 5, 5)


def test_overlap_report_and_guard():
    t = InteractionTable.concat([table([("1", "a"), ("2", "b")], domain="S"), table([("2", "c"), ("3", "d")], domain="T")])
    r = overlap_report(t, "S", "T")
    assert (r.source_users, r.target_users, r.overlap_users) == (2, 2, 1)
    assert r.share_of_target == 0.5
    swapped = InteractionTable.concat([table([("1", "a")], domain="S"), table([("c", "2")], domain="T")])
    with pytest.raises(CrossRecError, match="swapped user/item columns"):
        require_overlap(overlap_report(swapped, "S", "T"))


def _sequences(n_users=50, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{rng.integers(0, 40)}{k}") for u in range(n_users) for k in range(int(rng.integers(1, 9)))]
    return table(rows, domain="D")


def test_leave_one_out_takes_the_last_items():
    t = leave_one_out(_sequences())
    f = t.frame
    for _, g in f.groupby("user"):
        g = g.sort_values("position")
        n = len(g)
        expected = ["train"] * n
        if n >= 2:
            expected[-1] = "test"
        if n >= 3:
            expected[-2] = "valid"
        assert g["split"].tolist() == expected


def test_ratio_split_shares_and_no_loss():
    t = _sequences(200)
    s = ratio_split(t, valid=0.1, test=0.2, seed=1)
    assert len(s) == len(t)
    counts = s.frame["split"].value_counts(normalize=True)
    assert 0.1 < counts["test"] < 0.35
    assert (s.frame.groupby("user")["split"].apply(lambda x: (x == "train").any())).all()
    assert s.frame.equals(ratio_split(t, valid=0.1, test=0.2, seed=1).frame)
    with pytest.raises(CrossRecError, match="invalid shares"):
        ratio_split(t, valid=0.5, test=0.6)


def test_cold_start_folds_cover_every_shared_user_once(tiny_source):
    t = tiny_source.load()
    tested = []
    for fold in range(5):
        s = cold_start_split(t, source="A", target="B", share=0.2, fold=fold, n_folds=5, valid_share=0.1, seed=7)
        f = s.frame
        test_users = set(f.loc[f["split"] == "test", "user"])
        valid_users = set(f.loc[f["split"] == "valid", "user"])
        assert not test_users & valid_users
        target = f[f["domain"] == "B"]
        # cold users keep no target training interaction, and keep all their source ones
        assert not set(target.loc[target["split"] == "train", "user"]) & (test_users | valid_users)
        assert (f.loc[f["domain"] == "A", "split"] == "train").all()
        tested += sorted(test_users)
    shared = set(t.users("A")) & set(t.users("B"))
    assert sorted(tested) == sorted(shared)


def test_cold_start_folds_past_n_folds_are_a_new_partition(tiny_source):
    """Folds 5..9 of n_folds=5 (an experiment's second block of seeds) again test every shared
    user once, grouped differently from folds 0..4."""
    t = tiny_source.load()

    def tested(fold):
        f = cold_start_split(t, source="A", target="B", share=0.2, fold=fold, n_folds=5, valid_share=0.1, seed=7).frame
        return frozenset(f.loc[f["split"] == "test", "user"])

    first, second = [tested(fold) for fold in range(5)], [tested(fold) for fold in range(5, 10)]
    shared = set(t.users("A")) & set(t.users("B"))
    assert sorted(u for part in second for u in part) == sorted(shared)
    assert set(first) != set(second)
    assert tested(3) == first[3]  # round 0 is the partition it always was


def test_cold_start_fold_must_not_be_negative(tiny_source):
    with pytest.raises(CrossRecError, match="fold >= 0"):
        cold_start_split(tiny_source.load(), source="A", target="B", share=0.2, fold=-1, n_folds=5)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1])
def test_cold_start_share_must_be_a_proper_fraction(tiny_source, share):
    with pytest.raises(CrossRecError, match="strictly between 0 and 1"):
        cold_start_split(tiny_source.load(), source="A", target="B", share=share)


def test_split_round_trip(tmp_path):
    s = leave_one_out(_sequences())
    path = save_split(s, tmp_path / "split.csv.gz")
    back = load_split(path)
    pd.testing.assert_frame_equal(back.frame, s.frame, check_dtype=False)
    assert not list(tmp_path.glob(".*.tmp"))
    assert split_counts(back).loc[("D", "test"), "interactions"] == (s.frame["split"] == "test").sum()
    with pytest.raises(CrossRecError, match="does not exist"):
        load_split(tmp_path / "nope.csv")


def test_new_item_split_holds_out_whole_items(tiny_source):
    from crossrec_lit.data import new_item_split

    s = new_item_split(tiny_source.load(), domain="B", share=0.2, valid_share=0.1, seed=4)
    f = s.frame
    b = f[f["domain"] == "B"]
    test_items, valid_items, train_items = (set(b.loc[b["split"] == p, "item"]) for p in ("test", "valid", "train"))
    assert not test_items & train_items and not valid_items & train_items and not test_items & valid_items
    n_items = b["item"].nunique()
    assert abs(len(test_items) - 0.2 * n_items) <= 1 and abs(len(valid_items) - 0.1 * n_items) <= 1
    assert (f.loc[f["domain"] == "A", "split"] == "train").all()
    with pytest.raises(CrossRecError, match="invalid"):
        new_item_split(tiny_source.load(), domain="B", share=0.9, valid_share=0.2)


def test_file_identity_follows_content_not_time(tmp_path):
    """A cache key that held the file's mtime retrained every cached trial whenever the data were
    copied or re-mounted; the identity is the content: same bytes, same key; one byte, new key."""
    import os
    import shutil

    from crossrec_lit.data import InteractionFile

    original = tmp_path / "a.csv"
    original.write_text("user,item\nu1,i1\nu2,i2\n")
    copy = tmp_path / "copy" / "a.csv"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    os.utime(copy, (1_000_000_000, 1_000_000_000))
    key = InteractionFile(str(original)).describe()["file"]
    assert InteractionFile(str(copy)).describe()["file"] == key
    copy.write_text("user,item\nu1,i1\nu2,i3\n")  # same size, one byte changed
    assert InteractionFile(str(copy)).describe()["file"] != key


def _store_file(folder, name: str, text: str):
    path = folder / name
    path.write_text(text)
    return str(path)


def test_stores_reads_each_stores_own_file_as_one_table(tmp_path):
    from crossrec_lit.data import InteractionFile, Stores

    a = _store_file(tmp_path, "a.csv", "user,item\nu1,x\nu1,y\nu2,x\n")
    b = _store_file(tmp_path, "b.csv", "user,item\nu1,p\nu3,q\n")
    stores = Stores([InteractionFile(a, domain="A"), InteractionFile(b, domain="B")])
    loaded = stores.load()
    assert loaded.domains == ["A", "B"]
    # each store's rows and per-customer order are those of its own file
    for name, source in (("A", InteractionFile(a, domain="A")), ("B", InteractionFile(b, domain="B"))):
        assert loaded.domain(name).frame.reset_index(drop=True).equals(source.load().frame)
    # the identity (cache keys) follows either file's content
    key = stores.describe()
    _store_file(tmp_path, "b.csv", "user,item\nu1,p\nu3,r\n")
    assert stores.describe() != key
    # customers are matched across the files by their id
    assert overlap_report(loaded, "A", "B").overlap_users == 1


@pytest.mark.parametrize(
    "files, message",
    [
        ((("a.csv", "user,item\nu1,x\n", "A"), ("b.csv", "user,item\nu2,y\n", "A")), r"store 'A' comes from both source #1 and source #2.*Fix: give each source its own store name"),
        ((("a.csv", "user,item,ts\nu1,x,5\n", "A"), ("b.csv", "user,item\nu2,y\n", "B")), r"differ in their optional columns \(source #1 \(A\): \['timestamp'\]; source #2 \(B\): none\)"),
    ],
)
def test_stores_refuses_sources_that_do_not_fit_together(tmp_path, files, message):
    from crossrec_lit.data import InteractionFile, Stores

    sources = [InteractionFile(_store_file(tmp_path, name, text), domain=domain, timestamp_col="ts" if "ts" in text else None) for name, text, domain in files]
    with pytest.raises(CrossRecError, match=message):
        Stores(sources).load()


@pytest.mark.parametrize("bad", [[], "a.csv", ["a.csv"]])
def test_stores_needs_a_list_of_sources(bad):
    from crossrec_lit.data import Stores

    with pytest.raises(CrossRecError, match=r"Stores needs a non-empty list of data sources.*Fix: pass e.g. \[InteractionFile"):
        Stores(bad)
