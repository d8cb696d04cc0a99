"""Loaders of real-world formats: P5 files, Amazon review/metadata JSON, CSV/TSV/Parquet, download.

Every test writes the small files it reads into tmp_path; only the tests marked ``real_data`` read
the Amazon P5 folder, and they skip with the reason when it is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import time

import numpy as np
import pandas as pd
import pytest

from crossrec_lit.data.sources import (
    DATA_ENV_VAR,
    available_p5_domains,
    default_data_root,
    download,
    load_amazon_metadata_titles,
    load_amazon_p5,
    load_amazon_p5_text,
    load_amazon_reviews,
    load_interactions,
    resolve_data_root,
)
from crossrec_lit.data.sources import amazon
from crossrec_lit.errors import CrossRecError


def write_gz(path, text: str):
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


def write_lines(path, records, *, as_repr: bool = False, compress: bool = False):
    text = "".join((repr(r) if as_repr else json.dumps(r)) + "\n" for r in records)
    if compress:
        return write_gz(path, text)
    path.write_text(text, encoding="utf-8")
    return path


def rows(table) -> list[tuple]:
    return list(table.frame[["user", "item", "domain", "position"]].itertuples(index=False, name=None))


# ====================================================================== P5 sequences and text
@pytest.fixture
def p5_root(tmp_path):
    write_gz(tmp_path / "Beauty_user_sequence.txt.gz", "A1 0001234567 B000X 0000000001\nA2 B01 B02 B03 B04\n\n")
    write_gz(tmp_path / "Toys_user_sequence.txt.gz", "A2 T01 T02\r\nA3 0000000001 T03\r\n")
    write_gz(tmp_path / "Beauty_item_text.txt.gz", "0001234567 rose  lotion\nB000X \nB01 hair   dryer pro\n")
    write_gz(tmp_path / "Toys_item_text.txt.gz", "T01 wooden puzzle\n")
    return tmp_path


def test_p5_keeps_string_ids_and_line_positions(p5_root):
    table = load_amazon_p5(p5_root, "Beauty")
    assert rows(table) == [
        ("A1", "0001234567", "Beauty", 0),
        ("A1", "B000X", "Beauty", 1),
        ("A1", "0000000001", "Beauty", 2),
        ("A2", "B01", "Beauty", 0),
        ("A2", "B02", "Beauty", 1),
        ("A2", "B03", "Beauty", 2),
        ("A2", "B04", "Beauty", 3),
    ]
    assert not table.has_ratings and not table.has_timestamps


def test_p5_reads_several_domains_into_one_table(p5_root):
    table = load_amazon_p5(p5_root, ["Beauty", "Toys"])
    assert table.domains == ["Beauty", "Toys"]
    assert len(table.domain("Toys")) == 4  # CRLF line ends read like LF
    assert set(table.users("Beauty")) & set(table.users("Toys")) == {"A2"}
    assert rows(table.domain("Toys"))[2:] == [("A3", "0000000001", "Toys", 0), ("A3", "T03", "Toys", 1)]


def test_available_p5_domains(p5_root):
    assert available_p5_domains(p5_root) == ["Beauty", "Toys"]


def test_p5_text_keeps_empty_text_and_leading_zeros(p5_root):
    text = load_amazon_p5_text(p5_root, ["Beauty", "Toys"])
    assert list(text.columns) == ["domain", "item", "text"]
    assert text.values.tolist() == [
        ["Beauty", "0001234567", "rose lotion"],
        ["Beauty", "B000X", ""],
        ["Beauty", "B01", "hair dryer pro"],
        ["Toys", "T01", "wooden puzzle"],
    ]


def test_p5_missing_root_names_path_and_env_var(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CrossRecError, match="nowhere.*does not exist.*CROSSREC_DATA"):
        load_amazon_p5(missing, "Beauty")
    with pytest.raises(CrossRecError, match="root=None"):
        load_amazon_p5(None, "Beauty")


def test_p5_missing_domain_lists_available(p5_root):
    with pytest.raises(CrossRecError, match=r"Sports_user_sequence.*\['Beauty', 'Toys'\]"):
        load_amazon_p5(p5_root, ["Beauty", "Sports"])
    with pytest.raises(CrossRecError, match=r"Sports_item_text.*\['Beauty', 'Toys'\]"):
        load_amazon_p5_text(p5_root, "Sports")


@pytest.mark.parametrize("domains", [[], ["Beauty", "Beauty"], [""]])
def test_p5_bad_domain_lists(p5_root, domains):
    with pytest.raises(CrossRecError):
        load_amazon_p5(p5_root, domains)


# mtime=0: gzip's header carries the time, and a parameter that changes between two collections
# gives pytest-xdist workers different test ids ("Different tests were collected")
@pytest.mark.parametrize(
    "content",
    [b"", gzip.compress(b"", mtime=0), gzip.compress(b"\n  \n", mtime=0)],
    ids=["empty-bytes", "empty-gzip", "blank-lines-gzip"],
)
def test_p5_empty_file(tmp_path, content):
    (tmp_path / "Beauty_user_sequence.txt.gz").write_bytes(content)
    with pytest.raises(CrossRecError, match="Beauty_user_sequence.txt.gz.*(empty|no data lines)"):
        load_amazon_p5(tmp_path, "Beauty")


def test_p5_truncated_gzip_names_file(tmp_path):
    lines = "".join(f"U{u} " + " ".join(f"I{u * 7 + k:05d}" for k in range(6)) + "\n" for u in range(2000))
    whole = gzip.compress(lines.encode())
    (tmp_path / "Beauty_user_sequence.txt.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CrossRecError, match="Beauty_user_sequence.txt.gz is a damaged or truncated gzip"):
        load_amazon_p5(tmp_path, "Beauty")


def test_p5_corrupt_gzip_names_file(tmp_path):
    (tmp_path / "Toys_user_sequence.txt.gz").write_bytes(b"A1 B1 B2\nnot gzip at all\n")
    with pytest.raises(CrossRecError, match="Toys_user_sequence.txt.gz is a damaged or truncated gzip"):
        load_amazon_p5(tmp_path, "Toys")
    whole = bytearray(gzip.compress(b"A1 B1 B2 B3\n" * 500))
    whole[20:40] = b"\xff" * 20  # damage the deflate stream itself
    (tmp_path / "Toys_user_sequence.txt.gz").write_bytes(bytes(whole))
    with pytest.raises(CrossRecError, match="damaged or truncated"):
        load_amazon_p5(tmp_path, "Toys")


def test_p5_user_without_items_names_line(tmp_path):
    write_gz(tmp_path / "Beauty_user_sequence.txt.gz", "A1 B1 B2\nA2\nA3 B3\n")
    with pytest.raises(CrossRecError, match="line 2: user 'A2' has no items"):
        load_amazon_p5(tmp_path, "Beauty")


def test_p5_user_on_two_lines_is_an_error(tmp_path):
    write_gz(tmp_path / "Beauty_user_sequence.txt.gz", "A1 B1 B2\nA2 B3\nA1 B4\n")
    with pytest.raises(CrossRecError, match=r"'A1' has more than one line \(lines \[1, 3\]\)"):
        load_amazon_p5(tmp_path, "Beauty")


def test_p5_text_duplicate_item_is_an_error(tmp_path):
    write_gz(tmp_path / "Beauty_item_text.txt.gz", "B1 a\nB2 b\nB1 c\n")
    with pytest.raises(CrossRecError, match="'B1' has two text lines"):
        load_amazon_p5_text(tmp_path, "Beauty")


def test_p5_text_truncated_gzip(tmp_path):
    whole = gzip.compress("".join(f"I{k:05d} word{k} other{k}\n" for k in range(3000)).encode())
    (tmp_path / "Beauty_item_text.txt.gz").write_bytes(whole[:-30])
    with pytest.raises(CrossRecError, match="Beauty_item_text.txt.gz is a damaged or truncated gzip"):
        load_amazon_p5_text(tmp_path, "Beauty")


# ---------------------------------------------------------------------- data root
def test_default_data_root_prefers_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert default_data_root() == tmp_path
    assert resolve_data_root() == tmp_path


def test_resolve_data_root_env_var_to_missing_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(CrossRecError, match="gone does not exist.*CROSSREC_DATA"):
        resolve_data_root()


def test_resolve_data_root_nothing_found(monkeypatch):
    monkeypatch.setattr(amazon, "default_data_root", lambda: None)
    with pytest.raises(CrossRecError, match="none found.*pass root=.*CROSSREC_DATA"):
        resolve_data_root()


def test_default_data_root_search_order(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    # Pretend the package lives in <tmp>/proj/crossrec_lit, and run from <tmp>/proj/book/ch1.
    monkeypatch.setattr(amazon, "__file__", str(tmp_path / "proj" / "crossrec_lit" / "data" / "sources" / "amazon.py"))
    (tmp_path / "proj" / "book" / "ch1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "proj" / "book" / "ch1")
    assert default_data_root() is None
    near_cwd = tmp_path / "proj" / "shared" / "data" / "amazon_p5"  # <cwd>/../../shared/...
    near_cwd.mkdir(parents=True)
    assert default_data_root() == near_cwd.resolve()
    beside_repo = tmp_path / "shared" / "data" / "amazon_p5"  # <repo>/../shared/..., checked first
    beside_repo.mkdir(parents=True)
    assert default_data_root() == beside_repo.resolve()
    assert resolve_data_root(tmp_path) == tmp_path


# ---------------------------------------------------------------------- the real P5 folder
@pytest.fixture(scope="module")
def real_root():
    root = default_data_root()
    where = "nowhere" if root is None else str(root)
    if root is None or not (root / "Toys_user_sequence.txt.gz").is_file():
        pytest.skip(f"Amazon P5 files not found (looked in {where}; set {DATA_ENV_VAR} or use ../shared/data/amazon_p5)")
    return root


@pytest.mark.real_data
def test_real_p5_counts(real_root):
    start = time.perf_counter()
    table = load_amazon_p5(real_root, ["Beauty", "Toys"])
    elapsed = time.perf_counter() - start
    summary = table.summary()
    assert summary.loc["Toys", ["users", "items", "interactions"]].tolist() == [19_412, 11_924, 167_597]
    assert summary.loc["Beauty", ["users", "items", "interactions"]].tolist() == [22_363, 12_101, 198_502]
    assert len(np.intersect1d(table.users("Beauty"), table.users("Toys"))) == 2_073
    assert table.frame.groupby(["domain", "user"]).size().min() == 5
    # A guard against accidental quadratic parsing, loose enough for a busy machine (~0.4 s/domain).
    assert elapsed < 10


@pytest.mark.real_data
def test_real_p5_text(real_root):
    text = load_amazon_p5_text(real_root, ["Beauty", "Toys"])
    beauty = text[text["domain"] == "Beauty"]
    assert len(beauty) == 12_101 and len(text) - len(beauty) == 11_924
    assert beauty.loc[beauty["text"] == "", "item"].tolist() == ["B001LTVF7G"]


@pytest.mark.real_data
def test_real_p5_shared_item(real_root):
    table = load_amazon_p5(real_root, ["Sports", "Toys"])
    assert np.intersect1d(table.items("Sports"), table.items("Toys")).tolist() == ["B0036F99GM"]


# ====================================================================== raw review JSON
REVIEWS_2014 = [
    {"reviewerID": "R1", "asin": "0001234567", "overall": 5.0, "unixReviewTime": 1300, "reviewText": "good"},
    {"reviewerID": "R1", "asin": "B002", "overall": 2.0, "unixReviewTime": 1100, "helpful": [0, 1]},
    {"reviewerID": "R2", "asin": "B002", "overall": 4.0, "unixReviewTime": 1200},
    {"reviewerID": "R1", "asin": "B003", "overall": 3.0, "unixReviewTime": 1100},
]


def test_reviews_2014_json_gz(tmp_path):
    path = write_lines(tmp_path / "reviews_Beauty_5.json.gz", REVIEWS_2014, compress=True)
    table = load_amazon_reviews(path, "Beauty")
    frame = table.frame
    assert frame["item"].tolist() == ["0001234567", "B002", "B002", "B003"]
    assert frame["rating"].tolist() == [5.0, 2.0, 4.0, 3.0]
    assert frame["timestamp"].tolist() == [1300, 1100, 1200, 1100]
    # position follows time; the tie at 1100 keeps file order
    assert frame["position"].tolist() == [2, 0, 0, 1]
    assert set(frame["domain"]) == {"Beauty"}


def test_reviews_2018_extra_fields(tmp_path):
    records = [dict(r, vote="2", style={"Size:": " Large"}, verified=True, image=["x.jpg"]) for r in REVIEWS_2014]
    path = write_lines(tmp_path / "Beauty.json", records)
    table = load_amazon_reviews(path, "Beauty")
    assert len(table) == 4 and table.frame["rating"].tolist() == [5.0, 2.0, 4.0, 3.0]


def test_reviews_2014_dict_literal_lines(tmp_path):
    path = write_lines(tmp_path / "reviews.json", REVIEWS_2014, as_repr=True)
    assert "'reviewerID'" in path.read_text()
    table = load_amazon_reviews(path, "Beauty")
    assert table.frame["item"].tolist() == ["0001234567", "B002", "B002", "B003"]


def test_reviews_2023_milliseconds_and_parent_asin(tmp_path):
    records = [
        {"user_id": "U1", "asin": "C1", "parent_asin": "P1", "rating": 5.0, "timestamp": 1_600_000_000_500, "text": "x"},
        {"user_id": "U1", "asin": "C2", "rating": 3.0, "timestamp": 1_500_000_000_999, "helpful_vote": 0},
        {"user_id": "U2", "asin": "C3", "parent_asin": "0000000009", "rating": 1.0, "timestamp": 1_550_000_000_000},
    ]
    table = load_amazon_reviews(write_lines(tmp_path / "Beauty.jsonl", records), "Beauty")
    frame = table.frame
    assert frame["item"].tolist() == ["P1", "C2", "0000000009"]  # parent_asin, else asin
    assert frame["timestamp"].tolist() == [1_600_000_000, 1_500_000_000, 1_550_000_000]
    assert frame["position"].tolist() == [1, 0, 0]


def test_reviews_min_rating(tmp_path):
    table = load_amazon_reviews(write_lines(tmp_path / "r.json", REVIEWS_2014), "Beauty", min_rating=3)
    assert table.frame["rating"].tolist() == [5.0, 4.0, 3.0]
    with pytest.raises(CrossRecError, match="no review is rated 6"):
        load_amazon_reviews(write_lines(tmp_path / "r.json", REVIEWS_2014), "Beauty", min_rating=6)


def test_reviews_meta_path_keeps_titled_items(tmp_path):
    records = [{"asin": "0001234567", "title": "Rose lotion"}, {"asin": "B002", "title": ""}, {"asin": "B003"}]
    meta = write_lines(tmp_path / "meta.json", records)
    table = load_amazon_reviews(write_lines(tmp_path / "r.json", REVIEWS_2014), "Beauty", meta_path=meta)
    assert table.frame["item"].tolist() == ["0001234567"]


def test_reviews_mixed_schemas_name_the_line(tmp_path):
    records = REVIEWS_2014[:2] + [{"user_id": "U1", "parent_asin": "P1", "rating": 5.0, "timestamp": 1}]
    with pytest.raises(CrossRecError, match="line 3 uses the 2023 fields.*2014/2018"):
        load_amazon_reviews(write_lines(tmp_path / "r.json", records), "Beauty")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"reviewerID": "R9", "overall": 5.0, "unixReviewTime": 1}, "line 3: no item field"),
        ({"asin": "B9", "overall": 5.0, "unixReviewTime": 1}, "line 3: no user field 'reviewerID'"),
        ({"reviewerID": "R9", "asin": "B9", "overall": "five", "unixReviewTime": 1}, "line 3: overall='five' is not a number"),
        ({"reviewerID": "R9", "asin": "B9", "unixReviewTime": 1}, "line 3: no 'overall' field"),
    ],
)
def test_reviews_bad_record_names_the_line(tmp_path, bad, message):
    with pytest.raises(CrossRecError, match=message):
        load_amazon_reviews(write_lines(tmp_path / "r.json", REVIEWS_2014[:2] + [bad]), "Beauty")


def test_reviews_unknown_schema_and_garbage(tmp_path):
    with pytest.raises(CrossRecError, match="line 1: no user field"):
        load_amazon_reviews(write_lines(tmp_path / "r.json", [{"who": "x", "what": "y"}]), "Beauty")
    (tmp_path / "g.json").write_text(json.dumps(REVIEWS_2014[0]) + "\n{not json at all\n")
    with pytest.raises(CrossRecError, match="line 2 is neither JSON nor a Python dict literal"):
        load_amazon_reviews(tmp_path / "g.json", "Beauty")
    (tmp_path / "l.json").write_text("[1, 2]\n")
    with pytest.raises(CrossRecError, match="line 1 holds a list"):
        load_amazon_reviews(tmp_path / "l.json", "Beauty")


def test_reviews_file_errors(tmp_path):
    with pytest.raises(CrossRecError, match="does not exist"):
        load_amazon_reviews(tmp_path / "none.json", "Beauty")
    (tmp_path / "blank.json").write_text("\n\n")
    with pytest.raises(CrossRecError, match="has no records"):
        load_amazon_reviews(tmp_path / "blank.json", "Beauty")
    whole = gzip.compress("".join(json.dumps(dict(REVIEWS_2014[0], asin=f"I{k}")) + "\n" for k in range(3000)).encode())
    (tmp_path / "cut.json.gz").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(CrossRecError, match="cut.json.gz is a damaged or truncated gzip"):
        load_amazon_reviews(tmp_path / "cut.json.gz", "Beauty")
    with pytest.raises(CrossRecError, match="domain must be a non-empty string"):
        load_amazon_reviews(tmp_path / "blank.json", "")


# ---------------------------------------------------------------------- metadata titles
def test_metadata_titles_2014_dict_literal(tmp_path):
    records = [{"asin": "0001234567", "title": "Rose  Lotion", "categories": [["Beauty"]]}, {"asin": "B002", "salesRank": {"Beauty": 3}}]
    titles = load_amazon_metadata_titles(write_lines(tmp_path / "meta_Beauty.json.gz", records, as_repr=True, compress=True))
    assert titles.values.tolist() == [["0001234567", "Rose Lotion"], ["B002", ""]]


def test_metadata_titles_2018_entities_and_duplicates(tmp_path):
    records = [{"asin": "B1", "title": "Salt &amp; Pepper"}, {"asin": "B2", "title": "Mill"}, {"asin": "B1", "title": "again"}]
    titles = load_amazon_metadata_titles(write_lines(tmp_path / "meta.json", records))
    assert titles.values.tolist() == [["B1", "Salt & Pepper"], ["B2", "Mill"]]


def test_metadata_titles_2023_parent_asin(tmp_path):
    records = [{"parent_asin": "P1", "title": "Camp stove", "main_category": "Sports"}, {"parent_asin": "P2", "title": None}]
    titles = load_amazon_metadata_titles(write_lines(tmp_path / "meta.jsonl", records))
    assert titles.values.tolist() == [["P1", "Camp stove"], ["P2", ""]]


def test_metadata_titles_errors(tmp_path):
    with pytest.raises(CrossRecError, match="line 1: neither 'asin' nor 'parent_asin'"):
        load_amazon_metadata_titles(write_lines(tmp_path / "m.json", [{"title": "x"}]))
    with pytest.raises(CrossRecError, match="line 2: no 'asin' field"):
        load_amazon_metadata_titles(write_lines(tmp_path / "m.json", [{"asin": "B1"}, {"title": "x"}]))


# ====================================================================== CSV / TSV / Parquet
FRAME = pd.DataFrame(
    {
        "uid": ["007", "007", "NA", "12"],
        "iid": ["0001", "0002", "0001", "null"],
        "stars": [5, 3, 4, 1],
        "ts": [30, 10, 20, 5],
        "shop": ["A", "A", "B", "B"],
    }
)


def check_frame(table):
    frame = table.frame
    assert frame["user"].tolist() == ["007", "007", "NA", "12"]
    assert frame["item"].tolist() == ["0001", "0002", "0001", "null"]
    assert frame["rating"].tolist() == [5.0, 3.0, 4.0, 1.0]
    assert frame["position"].tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("name, sep", [("d.csv", ","), ("d.tsv", "\t"), ("d.txt", ";"), ("d.txt", " "), ("d.csv.gz", ",")])
def test_load_delimited(tmp_path, name, sep):
    path = tmp_path / name
    FRAME.to_csv(path, sep=sep, index=False)
    table = load_interactions(path, user_col="uid", item_col="iid", rating_col="stars", timestamp_col="ts", domain="Shop")
    check_frame(table)
    assert table.domains == ["Shop"]


def test_load_csv_explicit_sep_and_domain_col(tmp_path):
    path = tmp_path / "d.data.csv"
    FRAME.to_csv(path, sep="|", index=False)
    table = load_interactions(path, user_col="uid", item_col="iid", rating_col="stars", timestamp_col="ts", domain_col="shop", sep="|")
    assert table.domains == ["A", "B"]
    check_frame(table)


def test_load_csv_empty_rating_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("u,i,r\nu1,i1,\n")
    with pytest.raises(CrossRecError, match="d.csv: ratings contain NaN"):
        load_interactions(path, user_col="u", item_col="i", rating_col="r")
    path.write_text("u,i,r\nu1,i1,good\n")
    with pytest.raises(CrossRecError, match="d.csv: column 'rating' is not numeric"):
        load_interactions(path, user_col="u", item_col="i", rating_col="r")


def test_load_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "d.parquet"
    FRAME.to_parquet(path, index=False)
    table = load_interactions(path, user_col="uid", item_col="iid", rating_col="stars", timestamp_col="ts", domain_col="shop")
    check_frame(table)
    # Integer ids that a writer stored as floats come back without ".0".
    pd.DataFrame({"u": [1.0, 2.0], "i": [10.0, 20.0]}).to_parquet(tmp_path / "f.pq", index=False)
    table = load_interactions(tmp_path / "f.pq", user_col="u", item_col="i")
    assert table.frame["user"].tolist() == ["1", "2"] and table.frame["item"].tolist() == ["10", "20"]


def test_load_parquet_without_pyarrow(tmp_path, monkeypatch):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(CrossRecError, match="pip install pyarrow"):
        load_interactions(path, user_col="u", item_col="i")


def test_load_parquet_broken_file(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "d.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(CrossRecError, match="d.parquet is not a readable Parquet file"):
        load_interactions(path, user_col="u", item_col="i")


def test_load_interactions_errors(tmp_path):
    with pytest.raises(CrossRecError, match="missing.csv does not exist"):
        load_interactions(tmp_path / "missing.csv", user_col="u", item_col="i")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CrossRecError, match="empty.csv is empty"):
        load_interactions(tmp_path / "empty.csv", user_col="u", item_col="i")
    (tmp_path / "header.csv").write_text("u,i\n")
    with pytest.raises(CrossRecError, match="header.csv has column names but no rows"):
        load_interactions(tmp_path / "header.csv", user_col="u", item_col="i")
    (tmp_path / "data.xlsx").write_text("u,i\n1,2\n")
    with pytest.raises(CrossRecError, match="cannot tell the format of data.xlsx"):
        load_interactions(tmp_path / "data.xlsx", user_col="u", item_col="i")
    FRAME.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(CrossRecError, match=r"d.csv has no column\(s\) \['user'\]; its columns are \['uid'"):
        load_interactions(tmp_path / "d.csv", user_col="user", item_col="iid")


# ====================================================================== download
def test_download_file_url_with_checksum(tmp_path):
    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    payload = np.random.default_rng(0).bytes(3 << 20)  # several read chunks
    source.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest_dir = tmp_path / "out"
    dest_dir.mkdir()
    got = download(source.as_uri(), dest_dir, sha256=digest.upper())
    assert got == dest_dir / "data.bin" and got.read_bytes() == payload
    assert sorted(p.name for p in dest_dir.iterdir()) == ["data.bin"]  # no temp file left


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    source = tmp_path / "data.txt"
    source.write_text("hello")
    dest = tmp_path / "out" / "copy.txt"
    with pytest.raises(CrossRecError, match="has sha256 .* expected 0{64}"):
        download(source.as_uri(), dest, sha256="0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_download_keeps_existing_file_unless_overwrite(tmp_path):
    source = tmp_path / "data.txt"
    source.write_text("new")
    dest = tmp_path / "copy.txt"
    dest.write_text("old")
    assert download(source.as_uri(), dest).read_text() == "old"
    with pytest.raises(CrossRecError, match="exists but its sha256"):
        download(source.as_uri(), dest, sha256=hashlib.sha256(b"new").hexdigest())
    assert download(source.as_uri(), dest, overwrite=True).read_text() == "new"


def test_download_errors(tmp_path):
    with pytest.raises(CrossRecError, match="could not download"):
        download((tmp_path / "absent.bin").as_uri(), tmp_path / "x.bin")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CrossRecError, match="64 hexadecimal"):
        download((tmp_path / "absent.bin").as_uri(), tmp_path / "x.bin", sha256="abc")
    with pytest.raises(CrossRecError, match="could not download"):
        download("not a url", tmp_path / "x.bin")


# ---------------------------------------------------------------------- export and checksums
def test_write_interactions_round_trips_order_ratings_and_ids(tmp_path):
    from crossrec_lit.data import InteractionTable
    from crossrec_lit.data.sources import write_interactions

    frame = pd.DataFrame(
        {"user": ["007", "007", "NA", "NA"], "item": ["0123", "B01", "0123", "x"], "domain": ["A", "A", "B", "B"],
         "position": [1, 0, 0, 1], "rating": [5.0, 3.0, 4.0, 1.0]}
    )
    table = InteractionTable(frame)
    for name in ("stores.csv", "stores.csv.gz"):
        path = write_interactions(table, tmp_path / name)
        back = load_interactions(path, user_col="user", item_col="item", domain_col="domain", position_col="position", rating_col="rating")
        pd.testing.assert_frame_equal(
            back.frame.sort_values(["user", "item"]).reset_index(drop=True)[frame.columns],
            table.frame.sort_values(["user", "item"]).reset_index(drop=True)[frame.columns],
            check_dtype=False,
        )
    # the gzip export does not carry the time: the same table, the same bytes, the same checksum
    first = (tmp_path / "stores.csv.gz").read_bytes()
    time.sleep(1.1)
    assert write_interactions(table, tmp_path / "stores.csv.gz").read_bytes() == first
    with pytest.raises(CrossRecError, match="writes CSV"):
        write_interactions(table, tmp_path / "stores.parquet")
    assert not (tmp_path / "stores.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stores.csv", "stores.csv.gz"]  # no temporary left


def test_verify_amazon_p5_flags_a_changed_or_missing_file(tmp_path):
    from crossrec_lit.data.sources import P5_CHECKSUMS, verify_amazon_p5

    write_gz(tmp_path / "Toys_user_sequence.txt.gz", "u1 i1 i2 i3 i4 i5\n")
    (tmp_path / "Beauty_user_sequence.txt.gz").write_bytes(b"not gzip")
    table = verify_amazon_p5(tmp_path).set_index("file")
    assert set(table.index) == set(P5_CHECKSUMS)
    assert table.loc["Toys_user_sequence.txt.gz", "present"] and table.loc["Toys_user_sequence.txt.gz", "lines"] == 1
    assert not table["ok"].any()
    assert table.loc["Beauty_user_sequence.txt.gz", "sha256"] == "unreadable"
    assert not table.loc["Sports_user_sequence.txt.gz", "present"]


@pytest.mark.real_data
def test_verify_amazon_p5_accepts_the_shared_files(data_root):
    from crossrec_lit.data.sources import verify_amazon_p5

    table = verify_amazon_p5(data_root)
    assert table["ok"].all(), table[~table["ok"]].to_string()
