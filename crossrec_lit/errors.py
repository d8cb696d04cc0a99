"""The one exception type users see for bad input.

Every message has the same shape, ``<problem>. Fix: <what to do>``, on one line, so a user reading a
traceback or the CLI's one-line error knows both what is wrong and how to repair it.
"""

from __future__ import annotations


class CrossRecError(ValueError):
    """Bad input to crossrec_lit: the message names the problem and the fix.

    Subclasses ``ValueError`` so callers that already catch ``ValueError`` keep working.
    """

    def __init__(self, problem: str, fix: str):
        self.problem = problem.rstrip(". ")
        self.fix = fix.rstrip(". ")
        super().__init__(f"{self.problem}. Fix: {self.fix}.")
