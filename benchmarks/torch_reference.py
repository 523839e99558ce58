"""PyTorch reference of jaxmt's multitask model, train step and predict step (benchmarks only).

The same MiniLM weights (the model directory's model.safetensors, loaded by `transformers.BertModel`),
mean pooling, dropout, the same heads (5-way softmax for sst, one BCE logit for para, a bounded
MSE score for sts), AdamW with the same settings and the same warm-up/decay schedule, clipping
at global norm 1. PCGrad is done as the common PyTorch implementation (WeiChengTseng/Pytorch-PCGrad)
does it: one backward per task, flattened gradients, random-order projections, `.grad` set.

Nothing in `jaxmt` imports this module; torch is the `bench` extra.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np

TORCH_MISSING = ("torch is not installed, so the PyTorch reference (and the jaxmt/torch ratio) is skipped; "
                 "install the benchmark extra: pip install 'jaxmt[bench]' (torch==2.13.0)")


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def setup_torch(benchmark: str, no_torch: bool, threads: int) -> str | None:
    """Sets torch's thread count when the reference runs; else returns (and prints) why it is skipped."""
    if no_torch or not torch_available():
        note = "skipped by --no_torch" if no_torch else TORCH_MISSING
        print(f"{benchmark}: {note}", file=sys.stderr)
        return note
    import torch

    torch.set_num_threads(threads)
    return None


def build_torch_model(model_dir: Path, specs: dict, dropout: float = 0.1, seed: int = 0):
    """`TorchMultitask` on `model_dir`'s weights, heads initialised like jaxmt's (normal(0.02), zero bias)."""
    import torch
    from torch import nn
    from transformers import BertModel

    class TorchMultitask(nn.Module):
        """BertModel -> masked mean pooling -> dropout -> one linear head per task."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False,
                                                  attn_implementation="sdpa", local_files_only=True)
            self.dropout = nn.Dropout(dropout)
            hidden = self.bert.config.hidden_size
            self.specs = specs
            self.heads = nn.ModuleDict({t: nn.Linear(hidden, s.output_dim) for t, s in sorted(specs.items())})
            for head in self.heads.values():
                nn.init.normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)

        def forward(self, task: str, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask[..., None].to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out = self.heads[task](self.dropout(pooled))
            spec = self.specs[task]
            if spec.kind == "classification":
                return out
            out = out[:, 0]
            if spec.kind == "binary":
                return out
            return spec.label_min + (spec.label_max - spec.label_min) * torch.sigmoid(out)

    torch.manual_seed(seed)
    return TorchMultitask()


def torch_batch(batch: dict) -> dict:
    """A jaxmt batch ([B, 1, L] numpy, 'cross' pairs) as torch tensors ([B, L])."""
    import torch

    flat = {k: torch.from_numpy(np.ascontiguousarray(batch[k][:, 0])).long()
            for k in ("input_ids", "attention_mask", "token_type_ids")}
    flat["labels"] = torch.from_numpy(np.asarray(batch["labels"]))
    return flat


def task_loss(spec, outputs, labels):
    import torch.nn.functional as F

    if spec.kind == "classification":
        return F.cross_entropy(outputs, labels.long())
    if spec.kind == "binary":
        return F.binary_cross_entropy_with_logits(outputs, labels.float())
    return F.mse_loss(outputs, labels.float())


def make_optimizer(model, learning_rate: float = 5e-5, weight_decay: float = 0.01, num_steps: int = 1000,
                   warmup_fraction: float = 0.1):
    """AdamW (no decay on biases and LayerNorm) and jaxmt's linear warm-up/decay schedule."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)
    warmup = max(int(warmup_fraction * num_steps), 1)

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        return max(0.0, 1.0 - (step - warmup) / max(num_steps - warmup, 1))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def reference_training(model_dir: Path, specs: dict, heads: dict, num_steps: int, learning_rate: float = 5e-5,
                       weight_decay: float = 0.01, warmup_fraction: float = 0.1, seed: int = 0):
    """(model, optimizer, scheduler) of the reference, seeded, starting from jaxmt's initial `heads`."""
    seed_everything(seed)
    model = build_torch_model(model_dir, specs, seed=seed)
    copy_heads(model, heads)
    opt, scheduler = make_optimizer(model, learning_rate, weight_decay, num_steps, warmup_fraction)
    return model, opt, scheduler

def _pcgrad_backward(model, losses: list) -> None:
    """Pytorch-PCGrad's `pc_backward`: per-task grads, flattened, projected in random order, merged, set."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    grads, has_grads = [], []
    for loss in losses:
        for p in params:
            p.grad = None
        loss.backward(retain_graph=True)
        grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]))
        has_grads.append(torch.cat([(torch.ones_like(p) if p.grad is not None else torch.zeros_like(p)).flatten()
                                    for p in params]))
    shared = torch.stack(has_grads).prod(0).bool()
    pc_grad = [g.clone() for g in grads]
    for g_i in pc_grad:
        random.shuffle(grads)
        for g_j in grads:
            dot = torch.dot(g_i, g_j)
            if dot < 0:
                g_i -= dot * g_j / (g_j.norm() ** 2)
    merged = torch.zeros_like(grads[0])
    merged[shared] = torch.stack([g[shared] for g in pc_grad]).sum(dim=0)
    merged[~shared] = torch.stack([g[~shared] for g in pc_grad]).sum(dim=0)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = merged[offset:offset + n].view_as(p).clone()
        offset += n


def train_step(model, opt, scheduler, batches: dict, pcgrad: bool, clip_norm: float = 1.0) -> dict[str, float]:
    """One step on `batches` (task -> torch batch): summed losses, or PCGrad over the per-task losses."""
    import torch

    model.train()
    tasks = sorted(batches)
    losses = [task_loss(model.specs[t], model(t, batches[t]["input_ids"], batches[t]["attention_mask"],
                                              batches[t]["token_type_ids"]), batches[t]["labels"]) for t in tasks]
    if pcgrad and len(losses) > 1:
        _pcgrad_backward(model, losses)
    else:
        opt.zero_grad(set_to_none=True)
        sum(losses).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    opt.step()
    scheduler.step()
    return {t: float(v.detach()) for t, v in zip(tasks, losses)}


def predict(model, task: str, batch: dict):
    """Predictions (class id, 0/1, or score) for one torch batch, without dropout or autograd."""
    import torch

    model.eval()
    with torch.inference_mode():
        out = model(task, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        kind = model.specs[task].kind
        if kind == "classification":
            return out.argmax(-1)
        if kind == "binary":
            return (out > 0).int()
        return out


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n f32 matmul in torch."""
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def copy_heads(model, heads: dict) -> None:
    """Gives the torch heads jaxmt's initial head params (kernel [in, out] -> weight [out, in])."""
    import torch

    with torch.no_grad():
        for task, head in model.heads.items():
            head.weight.copy_(torch.from_numpy(np.asarray(heads[task]["kernel"]).T.copy()))
            head.bias.copy_(torch.from_numpy(np.asarray(heads[task]["bias"]).copy()))


def seed_everything(seed: int) -> None:
    """Seeds torch (dropout) and Python's `random` (PCGrad's task shuffles)."""
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
