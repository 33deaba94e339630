"""Training real models from the CLI and the API: torch datasets and loaders, token ids, models that
return a ``ModelOutput``, ``--loss``, weight decay and lr schedules, and progress."""

from __future__ import annotations

import io
import json
import math
import sys
from collections import OrderedDict

import pytest
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import TensorDataset

from lcdsl.cli import main
from lcdsl.engine.core import Engine
from lcdsl.errors import DataError, ModelError, SpecError
from lcdsl.language.parser import parse
from lcdsl.plan.settings import Settings, settings_from_spec
from lcdsl.report import progress
from lcdsl.report.progress import CStepProgress
from lcdsl.training import epochs
from lcdsl.training.batch import batch_loss, to_device
from lcdsl.training.data import Dataset, LoaderData, load_data
from lcdsl.training.epochs import Batches, LrSchedule, evaluate, make_optimizer
from lcdsl.training.lstep import make_l_step

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")

MODULE = "lcdsl_realtrain_factories"

FACTORIES = '''
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

CALLS = {"loss": 0}


def gpt2():
    return GPT2LMHeadModel(GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0,
    ))


class Tokens(Dataset):
    """Random token ids; the labels are the ids (the model shifts them)."""

    def __init__(self, n, seed):
        self.ids = torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tokens(seed=0):
    return Tokens(48, seed), Tokens(16, seed + 1)


def token_tensors(seed=0):
    train, test = Tokens(48, seed).ids, Tokens(16, seed + 1).ids
    return train, train, test, test


def token_loader(seed=0):
    return DataLoader(Tokens(48, seed), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))


def lm_loss(outputs, batch):
    CALLS["loss"] += 1
    logits, ids = outputs.logits, batch[1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def bert():
    return BertForSequenceClassification(BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=2,
    ))


class Sentences(Dataset):
    def __init__(self, n, seed):
        self.ids = torch.randint(1, 40, (n, 8), generator=torch.Generator().manual_seed(seed))
        self.labels = (self.ids[:, 0] > 20).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.int64), "labels": self.labels[i]}


def sentences(seed=0):
    return Sentences(48, seed), Sentences(16, seed + 1)


def not_data():
    return object(), object()
'''

TINY = ["--steps", "2", "--epochs", "1", "--first-epochs", "1", "--mu-start", "1e-3", "--mu-factor", "2",
        "--reference-epochs", "1", "--batch-size", "16", "--optimizer", "adam", "--lr", "1e-3"]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("realtrain")
    (path / f"{MODULE}.py").write_text(FACTORIES)
    (path / "gpt.lc").write_text("transformer.h.*.mlp.c_fc : quant(k=4)\n")
    (path / "bert.lc").write_text("bert.encoder.layer.*.intermediate.dense : quant(k=4)\n")
    sys.path.insert(0, str(path))
    yield path
    sys.path.remove(str(path))
    sys.modules.pop(MODULE, None)


def compress(folder, spec, model, data, out, *extra):
    argv = ["compress", str(folder / spec), "--model", f"{MODULE}:{model}", "--data", f"{MODULE}:{data}",
            "--out", str(folder / out), *TINY, *extra]  # fmt: skip
    return main(argv)


def report(folder, out):
    return json.loads((folder / out / "report.json").read_text())


# ------------------------------------------------------------------------------------ the CLI


def test_gpt2_on_token_ids_compresses_with_progress_lines(folder, capsys, monkeypatch):
    monkeypatch.setattr(progress, "QUIET_SECONDS", 0.0)  # every task gets its line
    monkeypatch.setattr(epochs, "EPOCH_LINE_SECONDS", 0.0)  # every epoch too
    assert compress(folder, "gpt.lc", "gpt2", "tokens", "gpt") == 0
    printed = capsys.readouterr().out
    rep = report(folder, "gpt")
    steps = rep["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert all(math.isfinite(s["metrics"]["test_loss"]) and "test_error" not in s["metrics"] for s in steps)
    assert all(math.isfinite(s["loss"]) for s in steps[1:])
    assert steps[0]["seconds_c_step"] > 0  # step 0's time is recorded
    assert math.isfinite(rep["reference"]["test_loss"]) and rep["reference"]["test_error"] is None
    assert "test loss" in printed and "test loss: reference" in printed
    assert "direct compression: task 1/2 transformer.h.0.mlp.c_fc.weight" in printed
    assert "C step 2: task 2/2 transformer.h.1.mlp.c_fc.weight" in printed
    assert "L step 1/2: epoch 1/1, loss" in printed and "reference: epoch 1/1, loss" in printed
    assert (folder / "gpt" / "compressed.pt").is_file()


def test_bert_classifier_with_dict_batches_reports_its_error(folder, capsys):
    assert compress(folder, "bert.lc", "bert", "sentences", "bert", "--weight-decay", "1e-3",
                    "--lr-schedule", "cosine") == 0  # fmt: skip
    printed = capsys.readouterr().out
    steps = report(folder, "bert")["steps"]
    assert all(0 <= s["metrics"]["test_error"] <= 1 for s in steps)
    assert report(folder, "bert")["settings"]["lr_schedule"] == "cosine"
    assert "test err" in printed and "test error: reference" in printed
    assert ": task 1/" not in printed  # short C steps stay quiet off a terminal


def test_token_tensors_keep_their_dtype_and_a_loss_function_is_used(folder):
    data = load_data(f"{MODULE}:token_tensors")
    assert isinstance(data, Dataset) and data.x_train.dtype == torch.int64 and data.y_train.shape == (48, 16)
    factories = sys.modules[MODULE]
    factories.CALLS["loss"] = 0
    assert compress(folder, "gpt.lc", "gpt2", "token_tensors", "loss", "--loss", f"{MODULE}:lm_loss") == 0
    assert factories.CALLS["loss"] > 0
    assert all(math.isfinite(s["metrics"]["test_loss"]) for s in report(folder, "loss")["steps"])


def test_a_data_loader_without_test_part(folder, capsys):
    assert isinstance(load_data(f"{MODULE}:token_loader"), LoaderData)
    assert compress(folder, "gpt.lc", "gpt2", "token_loader", "loader") == 0
    assert "has no test part" in capsys.readouterr().out
    assert all(math.isfinite(s["metrics"]["test_loss"]) for s in report(folder, "loader")["steps"])


def test_bad_factories_and_losses_are_clear(folder, capsys):
    with pytest.raises(DataError, match="must return"):
        load_data(f"{MODULE}:not_data")
    code = main(["compress", str(folder / "gpt.lc"), "--model", "lenet300", "--data", f"{MODULE}:tokens",
                 "--out", str(folder / "bad")])  # fmt: skip
    assert code != 0 and "give --model module:function" in capsys.readouterr().err


# -------------------------------------------------------------------------------- batches


def test_a_torch_dataset_is_batched_in_the_seeded_order_and_resumes():
    ds = TensorDataset(torch.arange(10).unsqueeze(1), torch.arange(10) % 2)
    data = LoaderData("mine", ds)
    a = Batches(3, seed=5)
    first = [y for _, y in a.of(data)]
    assert torch.equal(torch.sort(torch.cat(first)).values, torch.sort(torch.arange(10) % 2).values)
    assert a.count_of(data) == 4
    b = Batches(3, seed=0)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a.of(data), b.of(data)))
    batch = to_device({"ids": torch.zeros(2, dtype=torch.int64), "nested": (torch.ones(1),)}, "cpu")
    assert batch["ids"].dtype == torch.int64 and isinstance(batch["nested"], tuple)


def test_batch_loss_rules():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(batch_loss(logits, (None, labels)), ce)  # scores: cross-entropy
    assert torch.equal(batch_loss({"logits": logits}, {"labels": labels}), ce)  # a dict with logits
    own = torch.tensor(1.5)
    assert batch_loss({"loss": own, "logits": logits}, {"labels": labels}) is own  # the model's own loss
    seq = torch.randn(2, 5, 3)  # (N, T, C) against (N, T)
    assert torch.isfinite(batch_loss(seq, (None, torch.zeros(2, 5, dtype=torch.int64))))
    with pytest.raises(ModelError, match="--loss"):
        batch_loss(logits, torch.zeros(4, 2))  # no labels
    with pytest.raises(ModelError, match="scalar tensor"):
        batch_loss(logits, (None, labels), lambda outputs, batch: outputs)


def test_evaluate_gives_error_for_classifiers_and_loss_otherwise():
    torch.manual_seed(0)
    x, y = torch.randn(8, 2), torch.arange(8) % 3
    data = Dataset("blobs", x, y, x, y, 3)
    assert set(evaluate(nn.Linear(2, 3), data)) == {"train_error", "test_error"}
    seq = Dataset("seq", x, torch.zeros(8, 2, dtype=torch.int64), x, torch.zeros(8, 2, dtype=torch.int64), 3)
    assert set(evaluate(nn.Sequential(nn.Linear(2, 6), nn.Unflatten(1, (2, 3))), seq)) == {"test_loss"}


# ------------------------------------------------------------------ weight decay, schedules


def _blobs() -> Dataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])[y] + 0.3 * torch.randn(60, 2, generator=g)
    return Dataset("blobs", x, y, x, y, 3)


class _Engine:
    def __init__(self, model: nn.Sequential) -> None:
        self.parameters = (model[0].weight,)  # the "compressed" tensor
        self.mus = (1.0,)
        self.max_steps = 1

    def add_penalty_grad(self) -> None:
        pass


def _train(settings: Settings) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3))
    make_l_step(model, _blobs(), settings)(_Engine(model), 0)
    return model


def test_weight_decay_skips_the_compressed_tensors_and_changes_the_trajectory():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3))
    plain = make_optimizer(model, "sgd", 0.1)
    assert len(plain.param_groups) == 1  # as before: no decay, one group
    decayed = make_optimizer(model, "sgd", 0.1, weight_decay=1e-2, no_decay=[model[0].weight])
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in decayed.param_groups}
    assert groups[0.0] == {id(model[0].weight)} and id(model[2].weight) in groups[1e-2]
    base = dict(lr=0.2, epochs=2, first_epochs=2, batch_size=20)
    default, explicit = _train(Settings(**base)), _train(Settings(**base, weight_decay=0.0, lr_schedule="constant"))
    assert all(torch.equal(p, q) for p, q in zip(default.parameters(), explicit.parameters()))
    with_decay = _train(Settings(**base, weight_decay=0.5))
    assert not torch.equal(with_decay[2].weight, default[2].weight)
    assert with_decay[2].weight.norm() < default[2].weight.norm()
    cosine = _train(Settings(**base, lr_schedule="cosine"))
    stepped = _train(Settings(**base, lr_schedule="step", lr_step_factor=0.1))
    assert not torch.equal(cosine[0].weight, default[0].weight)
    assert not torch.equal(stepped[0].weight, default[0].weight)


def test_lr_schedules():
    cosine = LrSchedule("cosine")
    scales = [cosine.scale(epoch, batch, 2, 2) for epoch in range(2) for batch in range(2)]
    c = math.cos(math.pi / 4)
    assert scales == [1.0, pytest.approx(0.5 * (1 + c)), pytest.approx(0.5), pytest.approx(0.5 * (1 - c))]
    step = LrSchedule("step", every=2, factor=0.1)
    assert [step.scale(e, 0, 6, 3) for e in range(5)] == [1.0, 1.0, 0.1, 0.1, pytest.approx(0.01)]
    assert LrSchedule().scale(3, 7, 9, 9) == 1.0


def test_new_settings_are_validated_where_they_are_written():
    settings = settings_from_spec(parse('weight_decay = 1e-4\nlr_schedule = "cosine"\nfc1 : quant(k=2)\n'))
    assert settings.weight_decay == 1e-4 and settings.lr_schedule == "cosine"
    with pytest.raises(SpecError) as info:
        settings_from_spec(parse('lr_schedule = "cosin"\nweight_decay = -1\nfc1 : quant(k=2)\n'))
    text = str(info.value)
    assert "<spec>:1:1" in text and "lr_schedule" in text and "<spec>:2:1" in text and "weight_decay" in text


# ---------------------------------------------------------------------------- progress


def test_c_step_progress_prints_plain_lines_off_a_terminal():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(6, 12), act=nn.Tanh(), fc2=nn.Linear(12, 3)))
    plan = parse("fc1, fc2 : quant(k=2)\nmu = [0.1]\n").bind(model)
    engine = Engine(model, plan)
    out = io.StringIO()
    CStepProgress(Console(file=out, force_terminal=False, width=200), quiet_seconds=0.0).attach(engine)
    seen = []
    engine.events.on("c_step_task", lambda **p: seen.append((p["step"], p["index"], p["total"], p["task"].name)))
    records = engine.run(lambda engine, k: None)
    assert seen == [(0, 1, 2, "fc1.weight"), (0, 2, 2, "fc2.weight"), (1, 1, 2, "fc1.weight"), (1, 2, 2, "fc2.weight")]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("direct compression: task 1/2 fc1.weight (")
    assert lines[3].startswith("C step 1: task 2/2 fc2.weight")
    assert records[0].seconds_c_step > 0
    quiet = io.StringIO()
    CStepProgress(Console(file=quiet, force_terminal=False), quiet_seconds=60).task(
        step=1, index=1, total=1, task=plan.tasks[0]
    )
    assert quiet.getvalue() == ""
