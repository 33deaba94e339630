"""A budget's θ (the chosen option's θ and its index) through every stored file: ``.lcz``,
``.safetensors``, ``compressed.pt`` and the run checkpoint, read back with the plan built in code;
a damaged index is a ModelError (an EngineError when resuming), never an IndexError."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
import safetensors.torch
import torch

from lcdsl.engine import Engine
from lcdsl.errors import EngineError, ModelError
from lcdsl.formats import MAGIC
from lcdsl.operators.lowrank import LowRank
from lcdsl.operators.quant import Quant
from lcdsl.store.atomic import load_checkpoint, save_atomic
from lcdsl.store.checkpoint import read_run_checkpoint, restore_run_checkpoint, run_checkpoint
from lcdsl.store.fields import decode_theta
from lcdsl.store.lcz import export_model, load_lcz
from lcdsl.store.model import compressed_state, load_compressed
from lcdsl.store.safetensors_file import load_safetensors
from tests.budget_plans import budget_plan, choice_of, two_layer_model
from tests.test_export import Halves

pytestmark = pytest.mark.usefixtures("one_thread")

QUANT = choice_of([Quant(bits=b) for b in (1, 2, 3)], ["bits=1", "bits=2", "bits=3"])
LOWRANK = choice_of([LowRank(rank=r) for r in (1, 2, 3)], ["rank=1", "rank=2", "rank=3"])
SPEC = "# a plan built in code\n"


def compressed():
    model = two_layer_model()
    plan = budget_plan(model, [
        (["0.weight"], QUANT, 4 * 32 + 320 * 2, "bits"),
        (["2.weight"], LOWRANK, 2 * (12 + 16), "params"),
    ])  # fmt: skip
    engine = Engine(model, plan)
    engine.direct_compression()
    return model, plan, engine, engine.finalize()


def write(kind, model, plan, thetas, path):
    if kind == "compressed.pt":
        save_atomic(compressed_state(model, plan, thetas, spec_text=SPEC, model_name="mlp"), path)
    else:
        export_model(model, plan, thetas, path, spec_text=SPEC, format=kind)


def load(kind, path, model, plan):
    if kind == "compressed.pt":
        return load_compressed(model, path, plan=plan)
    return (load_lcz if kind == "lcz" else load_safetensors)(path, model, plan=plan)


KINDS = ("lcz", "safetensors", "compressed.pt")


@pytest.mark.parametrize("kind", KINDS)
def test_the_choice_and_the_weights_come_back(kind, tmp_path):
    model, plan, _, thetas = compressed()
    path = tmp_path / f"m.{kind}"
    write(kind, model, plan, thetas, path)
    fresh = two_layer_model(seed=5)
    loaded = load(kind, path, fresh, plan)
    for name, theta in thetas.items():
        assert loaded[name]["choice"].dtype == torch.int64 and loaded[name]["choice"].dim() == 0
        assert int(loaded[name]["choice"]) == int(theta["choice"])
    for (name, p), q in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(p, q), name


def _damage_lcz(path, task, change):
    blob = path.read_bytes()
    _, length = struct.unpack_from("<4sI", blob)
    manifest = json.loads(zlib.decompress(blob[8 : 8 + length]))
    entry = next(t for t in manifest["tasks"] if t["name"] == task)
    change(entry["fields"]["choice"])
    head = zlib.compress(json.dumps(manifest).encode())
    path.write_bytes(struct.pack("<4sI", MAGIC, len(head)) + head + blob[8 + length :])


def _damage_safetensors(path, task, change):
    tensors = safetensors.torch.load_file(str(path))
    with safetensors.safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
    codecs = json.loads(metadata["codecs"])
    change(codecs[f"{task}.choice"])
    path.write_bytes(safetensors.torch.save(tensors, {**metadata, "codecs": json.dumps(codecs)}))


def _damage_compressed(path, task, change):
    state = load_checkpoint(path, error=ModelError)
    change(state["tasks"][task]["packed"]["choice"])
    torch.save(state, path)


DAMAGE = {"lcz": _damage_lcz, "safetensors": _damage_safetensors, "compressed.pt": _damage_compressed}
BAD_INDEX = {
    "past the options": (lambda meta: meta.update(base=3), r"choice holds 3, expected an option index in \[0, 3\)"),
    "negative": (lambda meta: meta.update(base=-1), r"choice holds -1"),
    "two of them": (lambda meta: meta.update(shape=[2]), r"choice is int64 of shape \[2\]"),
    "a 1-d index": (lambda meta: meta.update(shape=[1]), r"choice has shape \(1,\), expected a 0-d tensor"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(BAD_INDEX))
def test_a_damaged_index_is_a_model_error(kind, case, tmp_path):
    model, plan, _, thetas = compressed()
    path = tmp_path / f"m.{kind}"
    write(kind, model, plan, thetas, path)
    change, message = BAD_INDEX[case]
    DAMAGE[kind](path, "2.weight", change)
    fresh = two_layer_model(seed=5)
    before = [p.detach().clone() for p in fresh.parameters()]
    with pytest.raises(ModelError, match=message):
        load(kind, path, fresh, plan)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))  # nothing written


@pytest.mark.parametrize("value", [torch.tensor(True), torch.tensor(1.0), torch.tensor(1, dtype=torch.complex64)])
def test_an_index_of_another_dtype_is_a_model_error(value, tmp_path):
    model, plan, _, thetas = compressed()
    path = tmp_path / "compressed.pt"
    write("compressed.pt", model, plan, thetas, path)
    state = load_checkpoint(path, error=ModelError)
    del state["tasks"]["0.weight"]["packed"]["choice"]
    state["tasks"]["0.weight"]["theta"]["choice"] = value
    torch.save(state, path)
    dtype = str(value.dtype).removeprefix("torch.")
    with pytest.raises(ModelError, match=rf"task 0.weight does not fit the model: choice is {dtype} of shape \[\]"):
        load_compressed(two_layer_model(seed=5), path, plan=plan)


def test_a_plan_that_does_not_fit_the_model_is_a_model_error(tmp_path):
    model, plan, _, thetas = compressed()
    path = tmp_path / "m.lcz"
    write("lcz", model, plan, thetas, path)
    other = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 12))
    with pytest.raises(ModelError, match=r"parameter '0.weight' of shape \[16, 20\], which is of shape \[8, 20\]"):
        load_lcz(path, other, plan=plan)


def test_an_option_that_encodes_itself_is_decoded_through_the_choice():
    choice = choice_of([Halves(), Halves()], ["first", "second"])
    w = torch.randn(40)
    theta = choice.project_option(w, 1)
    fields = choice.encode(theta, (40,))
    assert set(fields) == {"positive", "choice"}
    back = decode_theta(choice, "operator", fields, (40,), "m.lcz: task t")
    assert choice.selected(back) == 1 and torch.equal(choice.decompress(back, (40,)), choice.decompress(theta, (40,)))
    for bad in (torch.tensor(2), torch.tensor(0.0), torch.tensor([0, 1])):
        with pytest.raises(ModelError, match=r"m.lcz: task t: Choice.decode failed: choice"):
            decode_theta(choice, "operator", {**fields, "choice": bad}, (40,), "m.lcz: task t")


class _Trainer:
    def __init__(self) -> None:
        self.state = {"epoch": 3}

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = dict(state)


def test_the_run_checkpoint_resumes_the_choices_and_refuses_a_damaged_index(tmp_path):
    model, plan, engine, _ = compressed()
    engine.run(lambda engine, step: 0.0)  # LC steps without training: each records its allocation
    thetas = engine.thetas
    path = tmp_path / "checkpoint.pt"
    keys = dict(model_name="mlp", data_name="toy", spec_text=SPEC, reference={})
    save_atomic(run_checkpoint(model, engine, _Trainer(), **keys), path)
    fresh = two_layer_model(seed=5)
    again = Engine(fresh, plan)
    restore_run_checkpoint(read_run_checkpoint(path), path, model_name="mlp", data_name="toy", model=fresh,
                           engine=again, trainer=_Trainer())  # fmt: skip
    for name, theta in thetas.items():
        assert torch.equal(again.thetas[name]["choice"], theta["choice"])
    assert len(again.history) == 3 and again.history[-1].budgets == engine.history[-1].budgets != []
    state = read_run_checkpoint(path)
    state["engine"]["thetas"]["0.weight"]["choice"] = torch.tensor(9)
    with pytest.raises(EngineError, match=r"engine.thetas\['0.weight'\]: choice holds 9"):
        restore_run_checkpoint(state, path, model_name="mlp", data_name="toy", model=fresh,
                               engine=Engine(fresh, plan), trainer=_Trainer())  # fmt: skip
