"""Baselines that every comparison must show: they need no gradient training."""

from __future__ import annotations

import warnings

import torch

from crossrec_lit.models.base import RecommenderModule, single_domain_batch

# Popularity counts items during one pass over the training batches and has no parameters to
# optimise; Lightning warns that such a fit "will run with no optimizer", which is the intent.
warnings.filterwarnings("ignore", message=r".*configure_optimizers` returned `None`.*")


class Popularity(RecommenderModule):
    """Rank items by how often they occur in the training data, the same list for every user.

    Counting happens in ``training_step`` over the positives of the first epoch, so it trains
    through the same DataModule, Trainer, CLI and DDP path as every other model (counts are
    summed across ranks).
    """

    def __init__(self, num_users: int, num_items: int, **kwargs):
        super().__init__(num_users, num_items, **kwargs)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.register_buffer("counts", torch.zeros(self.num_items, dtype=torch.float64))

    def training_step(self, batch, batch_idx):
        if self.current_epoch == 0:
            items = single_domain_batch(batch)["items"]
            self.counts += torch.bincount(items, minlength=self.num_items).to(self.counts)
        return None

    def on_train_epoch_end(self) -> None:
        if self.current_epoch == 0 and self.trainer.world_size > 1:
            self.counts.copy_(self.all_gather(self.counts).sum(0))

    def configure_optimizers(self):
        return None

    def score(self, users, items):
        return self.counts[items].float().expand(torch.broadcast_shapes(users.shape, items.shape))

    def full_scores(self, users):
        return self.counts.float().unsqueeze(0).expand(len(users), -1)
