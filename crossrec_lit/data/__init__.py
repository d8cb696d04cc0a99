"""Data layer: loading, validation, preprocessing, splitting, sampling and DataModules."""

from crossrec_lit.data.catalog import AmazonP5, AmazonReviews, DataSource, InteractionFile, Stores, Synthetic, TableSource
from crossrec_lit.data.datamodule import CrossDomainDataModule, InteractionDataModule
from crossrec_lit.data.indexed import IndexedInteractions
from crossrec_lit.data.interactions import InteractionTable, Vocab
from crossrec_lit.data.preprocess import OverlapReport, deduplicate, implicit_threshold, k_core, overlap_report, require_overlap
from crossrec_lit.data.sampling import EvalBatches, NegativeSampler, TrainBatches
from crossrec_lit.data.sequences import SequenceBatches, padded_sequences
from crossrec_lit.data.split import cold_start_split, leave_one_out, load_split, new_item_split, ratio_split, save_split, split_counts

__all__ = [
    "AmazonP5",
    "AmazonReviews",
    "CrossDomainDataModule",
    "DataSource",
    "EvalBatches",
    "IndexedInteractions",
    "InteractionDataModule",
    "InteractionFile",
    "InteractionTable",
    "NegativeSampler",
    "OverlapReport",
    "SequenceBatches",
    "Stores",
    "Synthetic",
    "TableSource",
    "TrainBatches",
    "Vocab",
    "cold_start_split",
    "deduplicate",
    "implicit_threshold",
    "k_core",
    "leave_one_out",
    "load_split",
    "new_item_split",
    "overlap_report",
    "padded_sequences",
    "ratio_split",
    "require_overlap",
    "save_split",
    "split_counts",
]
