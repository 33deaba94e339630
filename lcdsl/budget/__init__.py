"""Budgets (``within 40kB``): what each option of a choice costs (:mod:`.costs`), and the exact
allocation of options to tasks under one limit (:mod:`.knapsack`) from their checked distortion
tables (:mod:`.tables`)."""

from lcdsl.budget.costs import UNITS, choice_costs, dense_cost, option_cost
from lcdsl.budget.knapsack import allocate

__all__ = ["allocate", "option_cost", "choice_costs", "dense_cost", "UNITS"]
