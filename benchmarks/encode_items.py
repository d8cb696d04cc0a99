"""Encoding every item title of the Amazon P5 stores, first time and from the on-disk cache.

All titles of the domains (default Beauty, Sports, Toys; ~42k) go through
:class:`~crossrec_lit.features.EmbeddingCache` in a fresh temporary folder, twice: the first call
encodes everything, the second (a new cache object, so it reads the file back from disk) encodes
nothing. Done for all-MiniLM-L6-v2 (:class:`SentenceTransformerEncoder`, offline) and for the
hashing TF-IDF baseline (:class:`HashingTfidfEncoder`, fitted on the same titles).

Run:  .venv/bin/python benchmarks/encode_items.py [--threads 1 --domains Beauty Sports Toys --skip-minilm]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import numpy as np
import torch

from crossrec_lit.data.sources import load_amazon_p5_text, resolve_data_root
from crossrec_lit.features import EmbeddingCache, HashingTfidfEncoder, SentenceTransformerEncoder


def through_cache(label: str, encoder, titles: list[str], root: str, prepare_s: float, batch_size: int | None) -> None:
    cache = EmbeddingCache(root)
    t0 = time.perf_counter()
    first = cache.get_or_encode(encoder, titles, batch_size=batch_size)
    first_s = time.perf_counter() - t0
    encoded = cache.last_stats["encoded"]
    t0 = time.perf_counter()
    second = EmbeddingCache(root).get_or_encode(encoder, titles)
    second_s = time.perf_counter() - t0
    assert first.tobytes() == second.tobytes(), "cache hit is not bit-identical"
    size_mb = cache.cache_path(encoder).stat().st_size / 2**20
    print(f"\n{label}  ({encoder.dim}-d, cache file {size_mb:.1f} MiB)")
    print(f"  setup (import/load or fit)  {prepare_s:8.2f} s")
    print(f"  first call                  {first_s:8.2f} s   {len(titles) / first_s:9.0f} titles/s   ({encoded:,} distinct texts encoded)")
    print(f"  cached second call          {second_s:8.2f} s   {len(titles) / second_s:9.0f} titles/s   speed-up x{first_s / second_s:.0f}")
    norms = np.linalg.norm(first, axis=1)
    print(f"  row norms: min {norms.min():.4f} max {norms.max():.4f}  (zero rows: {int((norms == 0).sum())})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (torch.set_num_threads)")
    p.add_argument("--domains", nargs="+", default=["Beauty", "Sports", "Toys"])
    p.add_argument("--root", default=None, help="P5 folder; default: $CROSSREC_DATA or ../shared/data/amazon_p5")
    p.add_argument("--batch-size", type=int, default=256, help="MiniLM texts per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--skip-minilm", action="store_true", help="only the hashing baseline")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    frame = load_amazon_p5_text(resolve_data_root(args.root), args.domains)
    titles = frame["text"].tolist()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, device {args.device}")
    print(f"{len(titles):,} titles ({frame['text'].nunique():,} distinct, {int((frame['text'] == '').sum())} empty) over {', '.join(args.domains)}")

    with tempfile.TemporaryDirectory(prefix="crossrec-embcache-") as root:
        if not args.skip_minilm:
            t0 = time.perf_counter()
            minilm = SentenceTransformerEncoder(device=args.device, batch_size=args.batch_size)
            minilm.load()  # import sentence-transformers + read the weights: once per process
            through_cache("all-MiniLM-L6-v2 (sentence-transformers)", minilm, titles, root, time.perf_counter() - t0, args.batch_size)

        t0 = time.perf_counter()
        hashing = HashingTfidfEncoder(512).fit(titles)
        through_cache("hashing TF-IDF baseline (words)", hashing, titles, root, time.perf_counter() - t0, None)


if __name__ == "__main__":
    main()
