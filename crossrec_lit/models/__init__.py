"""Recommender LightningModules: baselines, single-store MF, cross-domain transfer models."""

from crossrec_lit.models.base import RecommenderModule
from crossrec_lit.models.baselines import CrossDomainCooccurrence, OverlapPopularity, Popularity, RandomScores, TargetOnlyMF
from crossrec_lit.models.blend import BlendRanker
from crossrec_lit.models.cmf import CMF
from crossrec_lit.models.conet import CoNet
from crossrec_lit.models.cross_domain import CrossDomainModule
from crossrec_lit.models.dtcdr import DTCDR
from crossrec_lit.models.emcdr import EMCDR, SourceMappingModule
from crossrec_lit.models.mf import BPRMF, MF, FactorModel
from crossrec_lit.models.ptupcdr import PTUPCDR
from crossrec_lit.models.sequential import SASRec
from crossrec_lit.models.shared import SharedUserMF
from crossrec_lit.models.text import TextTwoTower
from crossrec_lit.models.text_sequential import TextSASRec

__all__ = [
    "BPRMF",
    "BlendRanker",
    "CMF",
    "CoNet",
    "CrossDomainCooccurrence",
    "CrossDomainModule",
    "DTCDR",
    "EMCDR",
    "FactorModel",
    "MF",
    "OverlapPopularity",
    "PTUPCDR",
    "Popularity",
    "RandomScores",
    "RecommenderModule",
    "SASRec",
    "SharedUserMF",
    "SourceMappingModule",
    "TargetOnlyMF",
    "TextSASRec",
    "TextTwoTower",
]
