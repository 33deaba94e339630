"""LC compression of a small GPT-2 sharded with FSDP2 (``fully_shard``), C steps shared across ranks.

One process, or many under torchrun; the result is the same up to float rounding, because every
step uses the same *global* mini-batch (each rank takes a share of it, and the loss is scaled so
that FSDP's gradient average is the gradient of the global batch's mean loss)::

    python examples/fsdp_train.py --out runs/fsdp1                          # one process
    torchrun --standalone --nproc-per-node 2 examples/fsdp_train.py --out runs/fsdp2

    # two machines with 8 GPUs each (run on both, with node-rank 0 and 1):
    torchrun --nnodes 2 --nproc-per-node 8 --node-rank 0 \\
        --rdzv-backend c10d --rdzv-endpoint HOST0:29500 --rdzv-id lc-gpt \\
        examples/fsdp_train.py --backend nccl --out runs/fsdp16

Under torchrun each transformer block and the whole model are ``fully_shard`` ed: every rank holds
a shard of every parameter, the engine keeps Δ(θ) and λ as shards too, the penalty's gradient is
added to the local shards, and each task's C step is solved by one rank (chosen by cost) on the
task's gathered tensor; its θ and Δ(θ) are broadcast. ``--checkpoint DIR`` writes a sharded
checkpoint after every LC step; ``--resume DIR`` goes on from one, on any number of processes.
Rank 0 writes ``OUT/final.pt``: the whole final weights, θ and the history.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lcdsl.engine.core import Engine
from lcdsl.engine.distributed import rank_and_world, share_c_steps
from lcdsl.language.parser import parse
from lcdsl.store.atomic import save_atomic
from lcdsl.store.sharded import load_sharded, save_sharded

SPEC = """
mu         = geometric(start=0.05, factor=3.0, steps=4)
lr         = 0.05
batch_size = 16
epochs     = 1
first_epochs = 1
transformer.h.*.attn.c_attn : lowrank(rank=4)
transformer.h.*.mlp.c_fc    : quant(k=4)
transformer.h.*.mlp.c_proj  : prune(l0=25%)
lm_head                     : quant(k=8)      # the tied token embedding, named by its alias
"""

VOCAB, LENGTH, EXAMPLES = 64, 16, 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, help="a .lc spec (default: the one in this file)")
    parser.add_argument("--out", type=Path, required=True, help="folder for final.pt")
    parser.add_argument("--checkpoint", type=Path, help="write a sharded checkpoint here after every LC step")
    parser.add_argument("--resume", type=Path, help="go on from the sharded checkpoint in this folder")
    parser.add_argument("--stop-after", type=int, help="stop after this LC step (as if the job were killed)")
    parser.add_argument("--backend", default="gloo", help="torch.distributed backend (nccl on GPUs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    return parser.parse_args()


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)  # the same initial weights on every rank and in one process
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=32,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(config)


def shard(model: nn.Module, world: int, device: torch.device) -> nn.Module:
    """Each block, then the root (which keeps the embeddings and the tied head), ``fully_shard`` ed."""
    model.to(device)
    if world == 1:
        return model
    from torch.distributed.fsdp import fully_shard

    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    return model


def tokens(seed: int) -> torch.Tensor:
    """Random token ids, ``(EXAMPLES, LENGTH)``: a language model's data without a download."""
    return torch.randint(0, VOCAB, (EXAMPLES, LENGTH), generator=torch.Generator().manual_seed(seed))


def lm_loss(model: nn.Module, ids: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale`` × the summed next-token cross-entropy of ``ids``."""
    logits = model(input_ids=ids).logits[:, :-1]  # (batch, LENGTH − 1, VOCAB)
    return F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="sum") * scale


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        dist.init_process_group(args.backend)
    rank, world = rank_and_world()
    device = torch.device("cpu")
    if args.backend == "nccl":  # one GPU a process
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)

    model = tiny_gpt2()
    spec = parse(args.spec.read_text() if args.spec else SPEC)
    plan = spec.bind(model)  # before sharding: the names are the model's own either way
    model = shard(model, world, device)
    engine = Engine(model, plan)
    sharing = share_c_steps(engine)
    settings = engine.settings
    if rank == 0:
        print(f"{world} process(es); C steps by rank: {sharing.owners}")

    train, test = tokens(settings.seed).to(device), tokens(settings.seed + 1)[:16].to(device)
    tokens_per_batch = settings.batch_size * (LENGTH - 1)

    def l_step(engine: Engine, k: int) -> float:
        lr = settings.lr * settings.lr_decay**k
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=settings.momentum, nesterov=True)
        epochs = settings.first_epochs if k == 0 else settings.epochs
        total = torch.zeros((), dtype=torch.float64, device=device)
        for epoch in range(epochs):
            # the same order on every rank and after a resume: seeded by the LC step and epoch
            order = torch.randperm(EXAMPLES, generator=torch.Generator().manual_seed(settings.seed + 1000 * k + epoch))
            for start in range(0, EXAMPLES, settings.batch_size):
                batch = train[order[start : start + settings.batch_size].to(device)]
                optimizer.zero_grad(set_to_none=True)
                # FSDP averages gradients over ranks: scaled so that this is the global batch's mean
                loss = lm_loss(model, batch[rank::world], world / tokens_per_batch)
                loss.backward()
                engine.add_penalty_grad()  # on this rank's shards, after the reduce-scatter
                optimizer.step()
                total += loss.detach().double() / world
        if world > 1:
            dist.all_reduce(total)
        return float(total) / (epochs * (EXAMPLES // settings.batch_size))

    def evaluate(engine: Engine) -> dict[str, float]:
        with torch.no_grad():  # every rank runs the whole test batch: the same numbers everywhere
            return {"test_loss": float(lm_loss(model, test, 1 / test[:, 1:].numel()))}

    if args.resume is not None:
        manifest = load_sharded(args.resume, model, engine)
        if rank == 0:
            print(f"resumed at LC step {engine.step} from a checkpoint of {manifest['world_size']} process(es)")
    if args.checkpoint is not None:
        engine.events.on("lc_step_end", lambda engine, **_: save_sharded(args.checkpoint, model, engine))
    if args.stop_after is not None:
        engine.mus = engine.mus[: args.stop_after]  # a shorter schedule: the run ends after that step
    for record in engine.run(l_step, evaluate):
        if rank == 0:
            loss = "-" if record.loss is None else f"{record.loss:.4f}"
            print(f"step {record.step}  μ={record.mu:.3g}  loss={loss}  ‖w − Δ(θ)‖²={record.distortion:.4g}  "
                  f"test loss={record.metrics['test_loss']:.4f}  C step {record.seconds_c_step:.3f}s")  # fmt: skip
    thetas = engine.finalize()

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        save_atomic({"model": weights, "thetas": thetas, "history": [r.to_dict() for r in engine.history]},
                    args.out / "final.pt")  # fmt: skip
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
