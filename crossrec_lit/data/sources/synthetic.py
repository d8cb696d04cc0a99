"""The embedded default data: two synthetic stores whose customers share latent tastes.

Every chapter and test runs offline on this generator, and because the true factors are known, a
chapter can show *why* transfer helps or hurts: ``domain_shift`` moves the two stores' tastes apart,
``overlap`` sets how many customers shop in both, and ``text_signal`` how much item text reveals.

The model, per store ``d``:

* user ``u`` has a shared taste ``z_u ~ N(0, I)``; the taste used in store ``d`` is
  ``t_ud = (z_u + s * e_ud) / sqrt(1 + s**2)`` with a store-specific ``e_ud ~ N(0, I)`` and
  ``s = domain_shift``. The rescaling keeps every store's tastes equally spread, so ``s`` changes only
  how alike a user's two tastes are (correlation ``1 / (1 + s**2)``), not how picky users are.
  ``domain_shift="independent"`` draws ``t_ud`` afresh per store (correlation 0).
* item ``i`` has store-specific factors ``v_id ~ N(0, I)`` and a popularity bias ``b_id ~ N(0, 1)``.
* a user picks ``5 + Poisson(mean - 5)`` distinct items with probability proportional to
  ``exp(SHARPNESS * t_ud . v_id / sqrt(dim) + popularity_skew * b_id)``, sampled without replacement
  (Gumbel top-k); the order of the picks in the user's history is a random permutation.
* an item's text is 4-8 words, each drawn with probability ``text_signal`` from the word lists
  ("topics") of the item's two strongest latent dimensions and otherwise from all topic words, plus
  a store-specific generic noun. Both stores use the same topic words, so text links their items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crossrec_lit.data.interactions import InteractionTable
from crossrec_lit.errors import CrossRecError

# One topic of real words per latent dimension; every word belongs to exactly one topic.
TOPICS: tuple[tuple[str, ...], ...] = (
    ("hiking", "camping", "trail", "tent", "backpack", "compass", "lantern", "canteen", "summit", "wilderness"),
    ("puzzle", "toy", "blocks", "doll", "crayon", "playful", "toddler", "stuffed", "plush", "marble"),
    ("kitchen", "skillet", "spatula", "whisk", "baking", "recipe", "oven", "chef", "pantry", "saucepan"),
    ("moisturizer", "lotion", "serum", "skincare", "cleanser", "fragrance", "lipstick", "mascara", "facial", "cream"),
    ("workout", "yoga", "dumbbell", "treadmill", "stretching", "cardio", "muscle", "protein", "gym", "athletic"),
    ("wireless", "bluetooth", "charger", "battery", "speaker", "headphones", "cable", "adapter", "digital", "portable"),
    ("garden", "plant", "seeds", "flower", "soil", "watering", "pruning", "compost", "greenhouse", "shovel"),
    ("dog", "cat", "leash", "collar", "kitten", "puppy", "aquarium", "litter", "treats", "grooming"),
    ("guitar", "piano", "drum", "violin", "melody", "ukulele", "harmonica", "keyboard", "amplifier", "rhythm"),
    ("novel", "mystery", "poetry", "fiction", "author", "chapter", "paperback", "biography", "library", "bookmark"),
    ("paint", "canvas", "brush", "sketch", "watercolor", "easel", "pastel", "sculpture", "stencil", "glitter"),
    ("soccer", "basketball", "baseball", "football", "tennis", "racket", "volleyball", "golf", "hockey", "cricket"),
    ("luggage", "suitcase", "passport", "journey", "airport", "itinerary", "souvenir", "voyage", "cruise", "tourist"),
    ("candle", "cushion", "curtain", "rug", "vase", "lamp", "blanket", "frame", "mirror", "decor"),
    ("hammer", "screwdriver", "drill", "wrench", "pliers", "toolbox", "sander", "ladder", "clamp", "workbench"),
    ("snow", "ski", "sled", "winter", "scarf", "mittens", "snowboard", "parka", "frost", "igloo"),
    ("beach", "swim", "surf", "snorkel", "towel", "sunscreen", "kayak", "paddle", "goggles", "lifeguard"),
    ("science", "microscope", "telescope", "chemistry", "magnet", "robot", "planet", "experiment", "fossil", "circuit"),
    ("baby", "diaper", "bottle", "stroller", "pacifier", "nursery", "crib", "bib", "rattle", "teether"),
    ("party", "balloon", "birthday", "costume", "confetti", "banner", "candy", "gift", "ribbon", "celebration"),
)
# A generic noun per store: the only words that differ between stores, as in real catalogues.
STORE_NOUNS: tuple[tuple[str, ...], tuple[str, ...]] = (("kit", "set", "pack", "bundle"), ("edition", "collection", "box", "series"))

# How strongly taste drives choice. Measured at the defaults (store B, last item held out,
# recall@10): popularity about 0.11, an 8-factor SVD 0.22, the true tastes 0.35. Collaborative
# models beat popularity, and the gap to the truth leaves room for transfer (at 1.5 it nearly closed).
SHARPNESS = 2.0
MIN_INTERACTIONS = 5  # the 5-core convention of the real data
TOPICS_PER_ITEM = 2
TEXT_WORDS = (4, 8)
# Stars: chosen items have positive affinity, so the centre 3.0 gives (measured at the defaults) a
# mean of 4.28 and 51% five stars, near Amazon's reviews; the noise keeps even the true tastes'
# RMSE near 0.6 rather than 0.
RATING_CENTRE, RATING_SCALE, RATING_NOISE = 3.0, 1.0, 0.6
_SAMPLE_COLUMNS = 1024  # columns used to estimate a top-k threshold on wide rows
_CHUNK_CELLS = 4_000_000  # users x items scored at once: bounds memory at ~16 MB of float32


# eq=False: the fields hold arrays, whose == is elementwise, so equality is identity.
@dataclass(frozen=True, eq=False)
class SyntheticStores:
    """Two synthetic stores and the ground truth behind them.

    ``user_factors[d]`` has one row per generated user, in id order (row ``k`` is user ``user_ids[k]``),
    including users absent from store ``d``: their row is the taste they *would* have there, which
    is what a cold-start oracle needs. ``item_factors[d]`` has one row per item of ``d`` in id order
    (``item_ids(d)``); an item no user picked has a row but no interactions. ``params`` records the
    arguments and the derived constants.
    """

    table: InteractionTable
    item_text: pd.DataFrame
    user_factors: dict[str, np.ndarray]
    item_factors: dict[str, np.ndarray]
    params: dict

    @property
    def user_ids(self) -> np.ndarray:
        """Every generated user id, in the row order of ``user_factors``."""
        return _user_ids(self.params["n_users"])

    def item_ids(self, domain: str) -> np.ndarray:
        """Every item id of ``domain``, in the row order of ``item_factors[domain]``."""
        domains = list(self.params["domains"])
        if domain not in domains:
            raise CrossRecError(f"unknown domain {domain!r}; the stores are {domains}", f"use one of {domains}")
        return _item_ids(domain, self.params["n_items"][domains.index(domain)])


def make_synthetic_stores(
    n_users: int = 2000,
    n_items: int | Sequence[int] = (600, 500),
    domains: Sequence[str] = ("A", "B"),
    overlap: float = 0.5,
    dim: int = 8,
    domain_shift: float | str = 0.2,
    interactions_per_user: float | Sequence[float] = (12, 8),
    text_signal: float = 1.0,
    popularity_skew: float = 1.0,
    seed: int | None = 0,
    ratings: bool = False,
) -> SyntheticStores:
    """Generate two stores with shared customers (see the module docstring for the model).

    ``overlap`` is the share of users in both stores; the others are split evenly into users of
    only the first or only the second store (ties go to the first). ``n_items`` and
    ``interactions_per_user`` take one value per store or one for both. The same ``seed`` gives
    identical output.
    """
    domains = _check_domains(domains)
    n_items = _pair(n_items, "n_items", int)
    per_user = _pair(interactions_per_user, "interactions_per_user", float)
    _check_arguments(n_users, n_items, overlap, dim, domain_shift, per_user, text_signal, popularity_skew)
    if not isinstance(ratings, (bool, np.bool_)):
        raise CrossRecError(f"ratings must be True or False, got {ratings!r}", "pass ratings=True for 1-5 stars")
    rng = np.random.default_rng(seed)
    # a stream of its own, so that asking for stars leaves every pick as it was
    star_rng = np.random.default_rng(None if seed is None else [int(seed), 0x5747])

    members = _assign_users(n_users, overlap, rng)
    shared = rng.standard_normal((n_users, dim))
    user_ids = _user_ids(n_users)
    frames, texts, user_factors, item_factors = [], [], {}, {}
    for d, name in enumerate(domains):
        if domain_shift == "independent":
            taste = rng.standard_normal((n_users, dim))
        else:
            shift = float(domain_shift)
            taste = (shared + shift * rng.standard_normal((n_users, dim))) / np.sqrt(1.0 + shift**2)
        items = rng.standard_normal((n_items[d], dim))
        bias = rng.standard_normal(n_items[d])
        counts = MIN_INTERACTIONS + rng.poisson(per_user[d] - MIN_INTERACTIONS, size=members[d].size)
        counts = np.minimum(counts, n_items[d])
        rows, cols, positions = _sample_histories(taste[members[d]], items, bias, counts, popularity_skew, rng)
        item_ids = _item_ids(name, n_items[d])
        frame = pd.DataFrame({"user": user_ids[members[d][rows]], "item": item_ids[cols], "domain": name, "position": positions})
        if ratings:
            affinity = np.einsum("nd,nd->n", taste[members[d]][rows], items[cols]) / np.sqrt(dim)
            stars = RATING_CENTRE + RATING_SCALE * affinity + RATING_NOISE * star_rng.standard_normal(affinity.size)
            frame["rating"] = np.clip(np.rint(stars), 1, 5)
        frames.append(frame)
        texts.append(pd.DataFrame({"domain": name, "item": item_ids, "text": _item_texts(items, STORE_NOUNS[d], text_signal, rng)}))
        user_factors[name] = taste
        item_factors[name] = items

    params = {
        "n_users": int(n_users),
        "n_items": n_items,
        "domains": domains,
        "overlap": float(overlap),
        "dim": int(dim),
        "domain_shift": domain_shift if domain_shift == "independent" else float(domain_shift),
        "interactions_per_user": per_user,
        "text_signal": float(text_signal),
        "popularity_skew": float(popularity_skew),
        "seed": seed,
        "taste_correlation": 0.0 if domain_shift == "independent" else 1.0 / (1.0 + float(domain_shift) ** 2),
        "n_overlap_users": int(np.intersect1d(members[0], members[1]).size),
        "sharpness": SHARPNESS,
        "ratings": bool(ratings),
    }
    return SyntheticStores(
        table=InteractionTable(pd.concat(frames, ignore_index=True), copy=False),
        item_text=pd.concat(texts, ignore_index=True),
        user_factors=user_factors,
        item_factors=item_factors,
        params=params,
    )


# ---------------------------------------------------------------------- generation steps
def _user_ids(n_users: int) -> np.ndarray:
    width = max(6, len(str(n_users - 1)))
    return np.array([f"u{k:0{width}d}" for k in range(n_users)], dtype=object)


def _item_ids(domain: str, n_items: int) -> np.ndarray:
    width = max(5, len(str(n_items - 1)))
    return np.array([f"{domain}_i{k:0{width}d}" for k in range(n_items)], dtype=object)


def _assign_users(n_users: int, overlap: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted user indices of each store: a random ``overlap`` share in both, the rest split."""
    n_both = int(round(overlap * n_users))
    rest = n_users - n_both
    n_first_only = rest - rest // 2
    order = rng.permutation(n_users)
    both, first_only, second_only = np.split(order, [n_both, n_both + n_first_only])
    return np.sort(np.concatenate([both, first_only])), np.sort(np.concatenate([both, second_only]))


def _sample_histories(
    taste: np.ndarray,
    items: np.ndarray,
    bias: np.ndarray,
    counts: np.ndarray,
    popularity_skew: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user row, item column, position) of every pick, grouped by user, positions 0..k-1.

    Adding Gumbel noise to the logits and keeping the k largest draws k items without replacement
    with the softmax probabilities (the Gumbel top-k trick), for all users at once.
    """
    n_users, n_items = taste.shape[0], items.shape[0]
    k_max = int(counts.max())
    scale = np.float32(SHARPNESS / np.sqrt(items.shape[1]))
    item_t = items.T.astype(np.float32)
    prior = (popularity_skew * bias).astype(np.float32)
    chunk = max(1, _CHUNK_CELLS // n_items)
    picks = []
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        # einsum rather than @: with dim <= 20 BLAS gains little, and its threads, spinning after each
        # call, made the whole generator 1.4x slower on a busy 2-core machine (measured).
        logits = np.einsum("ud,di->ui", taste[start:stop].astype(np.float32), item_t, optimize=False)
        logits *= scale
        logits += prior
        # Gumbel(0, 1) noise is -log(-log U). Uniform float32 draws were measured faster than
        # exponential ones; U = 0 (possible in float32) is clamped so the noise stays finite.
        noise = rng.random(logits.shape, dtype=np.float32)
        np.maximum(noise, np.finfo(np.float32).tiny, out=noise)
        np.log(noise, out=noise)
        np.negative(noise, out=noise)
        np.log(noise, out=noise)
        logits -= noise
        picks.append(_top_k_columns(logits, k_max))
    ranked = np.concatenate(picks)  # each row: that user's top k_max items, best first
    # Keep each user's first k picks and shuffle them: random keys, with the dropped columns sent last.
    keys = rng.random(ranked.shape)
    slots = np.arange(k_max)
    keys[slots[None, :] >= counts[:, None]] = 2.0
    order = np.argsort(keys, axis=1)
    shuffled = np.take_along_axis(ranked, order, axis=1)
    keep = slots[None, :] < counts[:, None]
    rows = np.repeat(np.arange(n_users), counts)
    return rows, shuffled[keep], np.broadcast_to(slots, ranked.shape)[keep].astype(np.int64)


def _top_k_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest scores, best first (exact).

    A full partition of every row dominated the generator's run time on large catalogues, so wide
    rows are first cut down to a few times ``k`` candidates with a per-row threshold estimated on a
    column sample; the rare row left with fewer than ``k`` candidates keeps all its columns.
    """
    n_rows, n_cols = scores.shape
    if n_cols <= 2 * _SAMPLE_COLUMNS or k * 4 > n_cols:
        return _top_k_exact(scores, k)
    # The j-th largest of a sample of s columns sits near the top j*n_cols/s of the row: aim for
    # about twice k candidates, plus slack so the estimate's noise rarely leaves a row short.
    j = int(np.ceil(2 * k * _SAMPLE_COLUMNS / n_cols)) + 4
    sample = scores[:, :_SAMPLE_COLUMNS]
    threshold = np.partition(sample, _SAMPLE_COLUMNS - j, axis=1)[:, _SAMPLE_COLUMNS - j]
    candidate = scores >= threshold[:, None]
    short = np.count_nonzero(candidate, axis=1) < k
    candidate[short] = True
    rows, cols = np.nonzero(candidate)  # row-major, so each row's candidates are contiguous
    per_row = np.bincount(rows, minlength=n_rows)
    slot = np.arange(rows.size) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    # Pack the candidates into a narrow (rows x most candidates) matrix and rank that instead;
    # the -inf padding never outranks a real candidate because every row has at least k of them.
    packed_scores = np.full((n_rows, int(per_row.max())), -np.inf, dtype=scores.dtype)
    packed_scores[rows, slot] = scores[rows, cols]
    packed_cols = np.zeros(packed_scores.shape, dtype=np.int64)
    packed_cols[rows, slot] = cols
    return np.take_along_axis(packed_cols, _top_k_exact(packed_scores, k), axis=1)


def _top_k_exact(scores: np.ndarray, k: int) -> np.ndarray:
    n_cols = scores.shape[1]
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n_cols else np.broadcast_to(np.arange(n_cols), scores.shape)
    best_first = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, best_first, axis=1)[:, :k]


def _item_texts(factors: np.ndarray, nouns: tuple[str, ...], text_signal: float, rng: np.random.Generator) -> list[str]:
    n_items, dim = factors.shape
    words_per_topic = len(TOPICS[0])
    vocab = np.array([w for topic in TOPICS[:dim] for w in topic], dtype=object)
    per_item = min(TOPICS_PER_ITEM, dim)
    strongest = np.argsort(-factors, axis=1)[:, :per_item]
    lengths = rng.integers(TEXT_WORDS[0], TEXT_WORDS[1] + 1, size=n_items)
    # Twice the slots needed, so that dropping repeated words still leaves enough distinct ones.
    slots = (n_items, 2 * TEXT_WORDS[1])
    from_own = rng.random(slots) < text_signal
    topic = np.take_along_axis(strongest, rng.integers(0, per_item, size=slots), axis=1)
    own_word = topic * words_per_topic + rng.integers(0, words_per_topic, size=slots)
    any_word = rng.integers(0, vocab.size, size=slots)
    words = vocab[np.where(from_own, own_word, any_word)]
    noun = np.asarray(nouns, dtype=object)[rng.integers(0, len(nouns), size=n_items)]
    # dict.fromkeys drops repeated words but keeps the order, so titles read like titles.
    return [" ".join(list(dict.fromkeys(words[i]))[: lengths[i]] + [noun[i]]) for i in range(n_items)]


# ---------------------------------------------------------------------- validation
def _check_domains(domains: Sequence[str]) -> tuple[str, str]:
    names = (domains,) if isinstance(domains, str) else tuple(domains) if domains is not None else ()
    if len(names) != 2 or not all(isinstance(n, str) and n.strip() for n in names) or names[0] == names[1]:
        raise CrossRecError(f"domains must be two distinct non-empty names, got {domains!r}", "pass e.g. domains=('A', 'B')")
    if any(any(c.isspace() for c in n) for n in names):
        raise CrossRecError(f"domain names may not contain whitespace, got {names}", "use names such as 'Books' or 'Movies_TV'")
    return names


def _pair(value, name: str, kind: type) -> tuple:
    values = (value, value) if np.isscalar(value) else tuple(value)
    if len(values) != 2:
        raise CrossRecError(f"{name} needs one value per store (2), got {value!r}", f"pass {name}=(first, second) or a single number")
    try:
        return tuple(kind(v) for v in values)
    except (TypeError, ValueError):
        raise CrossRecError(f"{name} must be numbers, got {value!r}", f"pass {name}=(first, second)") from None


def _number(value, name: str, hint: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CrossRecError(f"{name} must be a number, got {value!r}", hint) from None
    if not np.isfinite(number):
        raise CrossRecError(f"{name} must be finite, got {value!r}", hint)
    return number


def _check_arguments(n_users, n_items, overlap, dim, domain_shift, per_user, text_signal, popularity_skew) -> None:
    if not isinstance(n_users, (int, np.integer)) or isinstance(n_users, bool) or n_users < 1:
        raise CrossRecError(f"n_users must be a positive integer, got {n_users!r}", "pass n_users=2000 or another count")
    if min(n_items) < MIN_INTERACTIONS:
        raise CrossRecError(
            f"each store needs at least {MIN_INTERACTIONS} items, got n_items={n_items}", f"pass n_items of {MIN_INTERACTIONS} or more"
        )
    if not 0.0 <= _number(overlap, "overlap", "pass e.g. overlap=0.5") <= 1.0:
        raise CrossRecError(f"overlap must be in [0, 1], got {overlap!r}", "pass the share of users in both stores, e.g. overlap=0.5")
    n_both = int(round(overlap * n_users))
    if n_both == 0 and n_users < 2:
        raise CrossRecError(f"with n_users={n_users} and overlap={overlap} the second store gets no users", "raise n_users or overlap")
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or not 1 <= dim <= len(TOPICS):
        raise CrossRecError(
            f"dim must be an integer in [1, {len(TOPICS)}] (one text topic per dimension), got {dim!r}", f"pass dim={len(TOPICS)} or less"
        )
    if isinstance(domain_shift, str):
        if domain_shift != "independent":
            raise CrossRecError(f"domain_shift must be a number >= 0 or 'independent', got {domain_shift!r}", "pass e.g. domain_shift=0.2")
    elif _number(domain_shift, "domain_shift", "pass e.g. domain_shift=0.2") < 0:
        raise CrossRecError(
            f"domain_shift must be >= 0, got {domain_shift!r}", "pass 0 for identical tastes or 'independent' for unrelated stores"
        )
    if min(per_user) < MIN_INTERACTIONS or not np.isfinite(per_user).all():
        raise CrossRecError(
            f"interactions_per_user must be at least {MIN_INTERACTIONS}, got {per_user}", f"pass a mean of {MIN_INTERACTIONS} or more"
        )
    if not 0.0 <= _number(text_signal, "text_signal", "pass e.g. text_signal=1.0") <= 1.0:
        raise CrossRecError(f"text_signal must be in [0, 1], got {text_signal!r}", "pass 1 for informative text, 0 for noise")
    if _number(popularity_skew, "popularity_skew", "pass e.g. popularity_skew=1.0") < 0:
        raise CrossRecError(f"popularity_skew must be >= 0, got {popularity_skew!r}", "pass 0 for no popularity effect, 1 for the default")
