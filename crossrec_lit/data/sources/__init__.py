"""Where interaction data comes from: the Amazon files, the user's own files, and the synthetic stores.

Every loader returns an :class:`~crossrec_lit.data.interactions.InteractionTable` (item text comes
as a plain DataFrame) and reads only the path it is given; :func:`download` is the one function that
touches the network, and only when called.
"""

from crossrec_lit.data.sources.amazon import (
    DATA_ENV_VAR,
    P5_CHECKSUMS,
    available_p5_domains,
    default_data_root,
    load_amazon_metadata_titles,
    load_amazon_p5,
    load_amazon_p5_text,
    load_amazon_reviews,
    resolve_data_root,
    verify_amazon_p5,
)
from crossrec_lit.data.sources.download import download
from crossrec_lit.data.sources.files import load_interactions, write_interactions
from crossrec_lit.data.sources.synthetic import SyntheticStores, make_synthetic_stores

__all__ = [
    "DATA_ENV_VAR",
    "P5_CHECKSUMS",
    "SyntheticStores",
    "available_p5_domains",
    "default_data_root",
    "download",
    "load_amazon_metadata_titles",
    "load_amazon_p5",
    "load_amazon_p5_text",
    "load_amazon_reviews",
    "load_interactions",
    "make_synthetic_stores",
    "resolve_data_root",
    "verify_amazon_p5",
    "write_interactions",
]
