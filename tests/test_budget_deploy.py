"""A task of a budget deploys as the option its C step chose: a codebook layer for a chosen
``quant(bits=…)``, two layers for a chosen ``lowrank(rank=…)``, with the dense compressed
model's outputs."""

from __future__ import annotations

import pytest
import torch

from lcdsl.deploy import deploy, deployed_operator
from lcdsl.engine import Engine
from lcdsl.operators import CodebookLinear
from lcdsl.operators.lowrank import LowRank
from lcdsl.operators.quant import Quant
from tests.budget_plans import budget_plan, choice_of, two_layer_model

pytestmark = pytest.mark.usefixtures("one_thread")

QUANT = choice_of([Quant(bits=b) for b in (1, 2, 3)], ["bits=1", "bits=2", "bits=3"])
LOWRANK = choice_of([LowRank(rank=r) for r in (1, 2, 3)], ["rank=1", "rank=2", "rank=3"])


def compressed_model():
    model = two_layer_model()
    plan = budget_plan(model, [
        (["0.weight"], QUANT, 4 * 32 + 320 * 2, "bits"),  # room for bits=2, not bits=3
        (["2.weight"], LOWRANK, 2 * (12 + 16), "params"),  # room for rank 2, not rank 3
    ])  # fmt: skip
    engine = Engine(model, plan)
    engine.direct_compression()
    return model, plan, engine.finalize()


def test_each_task_deploys_as_its_chosen_option_with_the_compressed_models_outputs():
    model, plan, thetas = compressed_model()
    assert QUANT.label(thetas["0.weight"]) == "bits=2" and LOWRANK.label(thetas["2.weight"]) == "rank=2"
    x = torch.randn(7, 20, generator=torch.Generator().manual_seed(1))
    deployed = deploy(model, plan, thetas, shrink=False, example=x)
    first, second = deployed.module[0], deployed.module[2]
    assert isinstance(first, CodebookLinear) and first.codebook.numel() == 4
    assert isinstance(second, torch.nn.Sequential) and second[0].out_features == 2  # (12×16) as 16→2→12
    changes = {c.module: c for c in deployed.changes}
    assert changes["0"].by == "quant(bits=2), plugin 'builtin'"
    assert changes["2"].by == "lowrank(rank=2), plugin 'builtin'"
    assert not deployed.kept
    with torch.no_grad():
        assert torch.allclose(deployed.module(x), model(x), atol=1e-5, rtol=1e-5)
    assert deployed.relative_difference is not None and deployed.relative_difference < 1e-5


def test_a_choice_deploys_as_the_option_of_its_theta_and_other_operators_as_they_are():
    w = torch.randn(16, 20)
    theta = LOWRANK.project_option(w, 2)
    option, own = deployed_operator(LOWRANK, theta)
    assert option == LowRank(rank=3) and "choice" not in own and set(own) == set(theta) - {"choice"}
    assert deployed_operator(Quant(bits=2), {"x": w}) == (Quant(bits=2), {"x": w})


def test_a_theta_that_chooses_no_option_leaves_the_layer_and_says_why():
    model, plan, thetas = compressed_model()
    broken = dict(thetas, **{"0.weight": {**thetas["0.weight"], "choice": torch.tensor(7)}})
    deployed = deploy(model, plan, broken, shrink=False)
    (kept,) = deployed.kept
    assert kept.module == "0.weight" and "chooses no option" in kept.reason and "choice holds 7" in kept.reason
    assert [c.module for c in deployed.changes] == ["2"]
