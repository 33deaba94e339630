"""The Hugging Face callback on a tiny BERT built from a config (nothing downloaded): the same LC
run as the plain loop, a resume from ``checkpoint-N`` equal to the uninterrupted run, the stop
at the end of the schedule, and the warning when training ends first."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
)

from lcdsl import parse
from lcdsl.engine.core import Engine
from lcdsl.integrations.hf import STATE_FILE, LCCallback

SPEC = """
mu = geometric(start=1e-2, factor=2.0, steps=3)
**.attention.self.query, **.attention.self.key : quant(k=4)
classifier : prune(l0=10)
"""
N = 24  # examples: one full batch, so the order the Trainer samples in does not matter


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def dataset() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (N, 8), generator=g)  # (N, tokens)
    labels = (ids[:, 0] > 20).long()
    return [{"input_ids": ids[i], "labels": labels[i]} for i in range(N)]


def engine_for(model: torch.nn.Module) -> Engine:
    return Engine(model, parse(SPEC).bind(model))


def train(model, callback, out, epochs: int, resume: str | None = None, **kwargs) -> Trainer:
    args = TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=N, lr_scheduler_type="constant",
        max_grad_norm=0.0, report_to=[], use_cpu=True, seed=0, disable_tqdm=True, logging_steps=1,
        save_strategy=kwargs.pop("save_strategy", "no"), **kwargs,
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset(), callbacks=[callback], optimizers=(optimizer, None)
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def plain_loop(model, epochs: list[int]) -> Engine:
    engine = engine_for(model)
    batch = {k: torch.stack([ex[k] for ex in dataset()]) for k in ("input_ids", "labels")}
    engine.direct_compression()
    for k, mu in enumerate(engine.mus):
        engine.mu = mu
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        for _ in range(epochs[k]):
            opt.zero_grad()
            (model(**batch).loss + engine.penalty()).backward()
            opt.step()
        engine.c_step()
        engine.multiplier_step()
        engine.step = k + 1
    engine.finalize()
    return engine


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float) -> None:
    theirs = dict(b.named_parameters())
    for name, p in a.named_parameters():
        torch.testing.assert_close(p, theirs[name], rtol=0, atol=atol, msg=name)


def test_callback_run_equals_the_plain_loop(tmp_path) -> None:
    expected_model = tiny_bert()
    plain_loop(expected_model, [2, 1, 1])

    model = tiny_bert()
    lc = LCCallback(engine_for(model), length=1, first_length=2)
    trainer = train(model, lc, tmp_path, epochs=20)

    assert trainer.state.epoch == pytest.approx(4)  # stopped at the end of the schedule
    assert [r.step for r in lc.engine.history] == [0, 1, 2, 3]
    assert lc.engine.history[1].loss is not None
    assert_same_weights(model, expected_model, atol=1e-5)
    query = model.bert.encoder.layer[0].attention.self.query.weight
    assert len(torch.unique(query)) <= 4
    assert int((model.classifier.weight != 0).sum()) <= 10


def test_resume_from_checkpoint_equals_the_uninterrupted_run(tmp_path) -> None:
    full = tiny_bert()
    train(full, LCCallback(engine_for(full), length=1), tmp_path / "full", epochs=20)

    first = tiny_bert()
    with pytest.warns(UserWarning, match="after 2 of 3 LC steps"):
        train(first, LCCallback(engine_for(first), length=1), tmp_path / "run", epochs=2, save_strategy="epoch")
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / STATE_FILE).is_file()

    resumed = tiny_bert()
    lc = LCCallback(engine_for(resumed), length=1)
    train(resumed, lc, tmp_path / "run", epochs=3, resume=str(checkpoint))
    assert [r.step for r in lc.engine.history] == [0, 1, 2, 3]
    assert_same_weights(resumed, full, atol=1e-6)


def test_step_unit_and_the_warning_when_training_ends_first(tmp_path) -> None:
    model = tiny_bert()
    before = copy.deepcopy(model.classifier.weight.detach())
    lc = LCCallback(engine_for(model), unit="step", length=2)
    with pytest.warns(UserWarning, match="after 1 of 3 LC steps; 3 more steps"):
        train(model, lc, tmp_path, epochs=3)
    assert lc.engine.step == 1
    assert not torch.equal(before, model.classifier.weight)  # trained, but not finalized
    assert int((model.classifier.weight != 0).sum()) > 10
