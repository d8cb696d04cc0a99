"""Item features from text: encoders (a pretrained sentence-transformers model, a hashing TF-IDF
baseline), an on-disk embedding cache, and per-domain item matrices in vocabulary order.

Importing this package loads no model and does not import sentence-transformers.
"""

from crossrec_lit.features.cache import EmbeddingCache, encode_domains, item_text_matrix, text_key
from crossrec_lit.features.text import (
    DEFAULT_MODEL_NAME,
    PIP_INSTALL_TEXT,
    HashingTfidfEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    as_text_list,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "PIP_INSTALL_TEXT",
    "EmbeddingCache",
    "HashingTfidfEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "as_text_list",
    "encode_domains",
    "item_text_matrix",
    "text_key",
]
