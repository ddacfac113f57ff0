"""Training the backbone and exits on encoded pages.

Strategies (the paper's two):
  joint      every exit's cross-entropy, weighted by depth (w_k = (k+1)/S, normalised), plus the
             gate heads' BCE on "the final head is right";
  two-stage  first the backbone and final head alone, then the other exits and gates on the frozen
             backbone (half the epochs each).
Resumable from the last finished epoch: weights and AdamW state are written as safetensors,
the rest (epoch, step, history, param groups) as JSON. Nothing is pickled."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm.auto import tqdm

from classifier.model import EarlyExitModel

Inputs = dict[str, torch.Tensor]


@dataclass
class TrainOptions:
    strategy: str = "joint"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    gate_weight: float = 0.1
    max_minutes: float | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class TrainResult:
    epochs_done: int
    stopped_early: bool  # the --max-minutes budget ended training before the last epoch
    seconds: float
    history: list[dict] = field(default_factory=list)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def exit_weights(num_stages: int) -> torch.Tensor:
    w = torch.arange(1, num_stages + 1, dtype=torch.float32)
    return w / w.sum()


def take(inputs: Inputs, idx: torch.Tensor) -> Inputs:
    return {k: v.index_select(0, idx) for k, v in inputs.items()}


def phase_of(epoch: int, options: TrainOptions) -> str:
    if options.strategy == "joint":
        return "joint"
    if options.strategy == "two-stage":
        return "backbone" if epoch < math.ceil(options.epochs / 2) else "exits"
    raise ValueError(f"unknown strategy {options.strategy!r} (joint or two-stage)")


def train(
    model: EarlyExitModel,
    train_inputs: Inputs,
    train_labels: torch.Tensor,
    val_inputs: Inputs | None,
    val_labels: torch.Tensor | None,
    options: TrainOptions,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> TrainResult:
    set_seed(options.seed)
    started = time.monotonic()
    n = len(train_labels)
    steps_per_epoch = max(1, math.ceil(n / options.batch_size))
    start_epoch, history, step, elapsed_before = 0, [], 0, 0.0
    optimizer, phase = None, None
    if resume and checkpoint_dir and (checkpoint_dir / "train_state.json").exists():
        state = json.loads((checkpoint_dir / "train_state.json").read_text())
        if state["options"]["strategy"] != options.strategy:
            raise ValueError("cannot resume: the checkpoint was trained with another --strategy")
        model.load_state_dict(load_file(str(checkpoint_dir / "model.safetensors")))
        start_epoch, history, step = state["epochs_done"], state["history"], state["step"]
        elapsed_before = state.get("seconds", 0.0)
        phase = phase_of(max(0, start_epoch - 1), options) if start_epoch else None
        if (
            phase is not None
            and phase == phase_of(start_epoch, options)
            and start_epoch < options.epochs
        ):
            optimizer = _make_optimizer(model, phase, options)
            _load_optimizer(optimizer, checkpoint_dir, state["optimizer_groups"])
        log(f"resumed after epoch {start_epoch}")
    deadline = started + options.max_minutes * 60 if options.max_minutes is not None else None
    stopped = False
    weights = exit_weights(model.num_stages).to(model.device)
    for epoch in range(start_epoch, options.epochs):
        new_phase = phase_of(epoch, options)
        if optimizer is None or new_phase != phase:
            phase = new_phase
            optimizer = _make_optimizer(model, phase, options)
        phase_epochs = _phase_epochs(phase, options)
        total_steps = phase_epochs * steps_per_epoch
        phase_step0 = _phase_start(phase, options) * steps_per_epoch
        model.train()
        if phase == "exits":  # frozen backbone: no dropout noise in the features exits learn from
            model.backbone.eval()
        # Seeded per epoch (order and dropout), so a resumed run repeats the uninterrupted one.
        torch.manual_seed(options.seed * 1000 + epoch + 1)
        order = torch.randperm(
            n, generator=torch.Generator().manual_seed(options.seed * 1000 + epoch)
        )
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{options.epochs} [{phase}]",
            disable=None if options.progress else True,  # None: drawn on a terminal only
            leave=False,
        )
        running = 0.0
        for b in bar:
            if deadline and time.monotonic() > deadline:
                stopped = True
                break
            idx = order[b * options.batch_size : (b + 1) * options.batch_size]
            batch = take(train_inputs, idx)
            labels = train_labels.index_select(0, idx).to(model.device)
            _set_lr(optimizer, options, step - phase_step0, total_steps)
            loss = _loss(model, batch, labels, phase, weights, options.gate_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            running += float(loss.detach())
            bar.set_postfix(loss=f"{running / (b + 1):.3f}")
        bar.close()
        if stopped:
            log(f"--max-minutes reached during epoch {epoch + 1}; keeping the weights so far")
            break
        record = {"epoch": epoch + 1, "phase": phase, "loss": running / steps_per_epoch}
        if val_inputs is not None and val_labels is not None and len(val_labels):
            record["val_accuracy"] = exit_accuracies(
                model, val_inputs, val_labels, options.batch_size
            )
        history.append(record)
        log(json.dumps(record))
        if checkpoint_dir:
            _save_checkpoint(
                model,
                optimizer,
                checkpoint_dir,
                epoch + 1,
                step,
                history,
                options,
                elapsed_before + time.monotonic() - started,
            )
    model.eval()
    return TrainResult(
        epochs_done=len(history),
        stopped_early=stopped,
        seconds=elapsed_before + time.monotonic() - started,
        history=history,
    )


def _loss(
    model: EarlyExitModel,
    batch: Inputs,
    labels: torch.Tensor,
    phase: str,
    weights: torch.Tensor,
    gate_weight: float,
) -> torch.Tensor:
    if phase == "backbone":
        state = model.embed(batch)
        logits, _ = model.advance(state, stages=model.num_stages)
        return F.cross_entropy(logits, labels)
    logits, gates = model.all_exit_logits(batch, with_gates=True)
    ce = torch.stack([F.cross_entropy(lg, labels) for lg in logits])
    if phase == "exits":  # the final head is frozen: its loss would only add noise
        ce = ce[:-1]
        loss = ce.mean()
    else:
        loss = (ce * weights).sum()
    right = (logits[-1].detach().argmax(-1) == labels).float()
    gate = torch.stack([F.binary_cross_entropy_with_logits(g, right) for g in gates[:-1]]).mean()
    return loss + gate_weight * gate


def _make_optimizer(model: EarlyExitModel, phase: str, options: TrainOptions) -> torch.optim.AdamW:
    frozen = phase == "exits"
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)
    for p in model.ramps[-1].parameters():
        p.requires_grad_(not frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)


def _phase_start(phase: str, options: TrainOptions) -> int:
    return math.ceil(options.epochs / 2) if phase == "exits" else 0


def _phase_epochs(phase: str, options: TrainOptions) -> int:
    if phase == "joint":
        return options.epochs
    half = math.ceil(options.epochs / 2)
    return half if phase == "backbone" else max(1, options.epochs - half)


def _set_lr(optimizer: torch.optim.Optimizer, options: TrainOptions, step: int, total: int) -> None:
    """Linear warm-up, then cosine decay to 5% (a function of the step, so resuming needs no
    scheduler state)."""
    warm = max(1, int(total * options.warmup_fraction))
    if step < warm:
        scale = (step + 1) / warm
    else:
        scale = 0.05 + 0.95 * 0.5 * (
            1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm)))
        )
    for group in optimizer.param_groups:
        group["lr"] = options.lr * scale


def all_logits(model: EarlyExitModel, inputs: Inputs, batch_size: int = 32) -> torch.Tensor:
    """(N, S, C) logits of every exit, in eval mode."""
    return all_logits_and_gates(model, inputs, batch_size)[0]


@torch.inference_mode()
def all_logits_and_gates(
    model: EarlyExitModel, inputs: Inputs, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, S, C) logits and (N, S) gate logits of every exit, in eval mode."""
    was_training = model.training
    model.eval()
    n = inputs["input_ids"].shape[0]
    chunks, gate_chunks = [], []
    for s in range(0, n, batch_size):
        idx = torch.arange(s, min(n, s + batch_size))
        logits, gates = model.all_exit_logits(take(inputs, idx), with_gates=True)
        chunks.append(torch.stack(logits, dim=1).float().cpu())
        gate_chunks.append(torch.stack(gates, dim=1).float().cpu())
    model.train(was_training)
    if not chunks:
        return torch.zeros(0, model.num_stages, model.num_labels), torch.zeros(0, model.num_stages)
    return torch.cat(chunks), torch.cat(gate_chunks)


def exit_accuracies(
    model: EarlyExitModel, inputs: Inputs, labels: torch.Tensor, batch_size: int = 32
) -> list[float]:
    logits = all_logits(model, inputs, batch_size)
    return [
        round(float((logits[:, k].argmax(-1) == labels).float().mean()), 4)
        for k in range(logits.shape[1])
    ]


def _save_checkpoint(
    model: EarlyExitModel,
    optimizer: torch.optim.Optimizer,
    path: Path,
    epochs_done: int,
    step: int,
    history: list[dict],
    options: TrainOptions,
    seconds: float,
) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
        str(path / "model.safetensors"),
    )
    opt = optimizer.state_dict()
    tensors = {}
    for pid, st in opt["state"].items():
        for key, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{pid}.{key}"] = t.detach().contiguous().cpu()
    save_file(tensors, str(path / "optimizer.safetensors"))
    state = {
        "epochs_done": epochs_done,
        "step": step,
        "history": history,
        "seconds": seconds,
        "options": asdict(options),
        "optimizer_groups": opt["param_groups"],
    }
    tmp = path / "train_state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path / "train_state.json")  # the JSON is the commit point of a checkpoint


def _load_optimizer(optimizer: torch.optim.Optimizer, path: Path, groups: list[dict]) -> None:
    file = path / "optimizer.safetensors"
    if not file.exists():
        return
    flat = load_file(str(file))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
