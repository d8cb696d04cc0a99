"""Recommender LightningModules."""

from crossrec_lit.models.base import RecommenderModule
from crossrec_lit.models.cross_domain import CrossDomainModule
from crossrec_lit.models.baselines import Popularity
from crossrec_lit.models.mf import BPRMF, MF, FactorModel

__all__ = ["BPRMF", "MF", "CrossDomainModule", "FactorModel", "Popularity", "RecommenderModule"]
