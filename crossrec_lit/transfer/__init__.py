"""Callbacks that move knowledge from the source store to the target store."""

from crossrec_lit.transfer.callbacks import FreezeUnfreeze, L2SP, LoadSourceWeights, NegativeTransferGuard, PhaseSchedule, SourceWeightSchedule

__all__ = ["FreezeUnfreeze", "L2SP", "LoadSourceWeights", "NegativeTransferGuard", "PhaseSchedule", "SourceWeightSchedule"]
