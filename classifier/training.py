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
from classifier.raster_exit import normalised_white, shifted
from classifier.textless import empty_text, without_text

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
    # Share of training pages read without their words in each batch (classifier/textless.py):
    # what teaches the OCR-free exit. 0 leaves every page as it is.
    text_dropout: float = 0.0
    # The raster exit's own epochs after the joint ones (classifier/raster_training.py), and
    # their peak learning rate; nothing runs for a model without a raster exit.
    raster_epochs: int = 20
    raster_lr: float = 3e-3
    # "bf16": forward passes under CPU autocast to bfloat16 (losses and weights stay float32);
    # ~1.35x faster steps on a CPU with AMX/AVX512-BF16 (measured here). "auto": bf16 where the
    # CPU has those instructions (emulated bfloat16 is slower than float32), else fp32.
    precision: str = "fp32"
    max_minutes: float | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class TrainResult:
    epochs_done: int
    stopped_early: bool  # the --max-minutes budget ended training before the last epoch
    seconds: float
    history: list[dict] = field(default_factory=list)


PRECISIONS = ("fp32", "bf16", "auto")


def resolve_precision(precision: str) -> str:
    """fp32 or bf16; "auto" is bf16 on a CPU with native bfloat16 matrix instructions."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    try:
        with open("/proc/cpuinfo") as fh:
            flags = set(fh.read().split())
    except OSError:
        return "fp32"
    return "bf16" if flags & {"amx_bf16", "avx512_bf16"} else "fp32"


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


@dataclass
class _Progress:
    """Where a run stands: what a checkpoint stores and a resume restores."""

    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    step: int = 0
    elapsed_before: float = 0.0
    phase: str | None = None
    optimizer: torch.optim.AdamW | None = None


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
    progress = _Progress()
    if resume and checkpoint_dir and (checkpoint_dir / "train_state.json").exists():
        progress = _resume(model, checkpoint_dir, options)
        log(f"resumed after epoch {progress.start_epoch}")
    deadline = started + options.max_minutes * 60 if options.max_minutes is not None else None
    epochs = _EpochRunner(model, train_inputs, train_labels, options, deadline)
    stopped = False
    for epoch in range(progress.start_epoch, options.epochs):
        new_phase = phase_of(epoch, options)
        if progress.optimizer is None or new_phase != progress.phase:
            progress.phase = new_phase
            progress.optimizer = _make_optimizer(model, new_phase, options)
        loss = epochs.run(epoch, progress)
        if loss is None:
            stopped = True
            log(f"--max-minutes reached during epoch {epoch + 1}; keeping the weights so far")
            break
        record = {"epoch": epoch + 1, "phase": progress.phase, "loss": loss}
        if val_inputs is not None and val_labels is not None and len(val_labels):
            record["val_accuracy"] = exit_accuracies(
                model, val_inputs, val_labels, options.batch_size
            )
        progress.history.append(record)
        log(json.dumps(record))
        if checkpoint_dir:
            seconds = progress.elapsed_before + time.monotonic() - started
            _save_checkpoint(model, checkpoint_dir, progress, options, seconds)
    model.eval()
    return TrainResult(
        epochs_done=len(progress.history),
        stopped_early=stopped,
        seconds=progress.elapsed_before + time.monotonic() - started,
        history=progress.history,
    )


def _resume(model: EarlyExitModel, checkpoint_dir: Path, options: TrainOptions) -> _Progress:
    """Weights, counters and (when the next epoch stays in the same phase) AdamW state."""
    state = json.loads((checkpoint_dir / "train_state.json").read_text())
    if state["options"]["strategy"] != options.strategy:
        raise ValueError("cannot resume: the checkpoint was trained with another --strategy")
    model.load_state_dict(load_file(str(checkpoint_dir / "model.safetensors")))
    progress = _Progress(
        start_epoch=state["epochs_done"],
        history=state["history"],
        step=state["step"],
        elapsed_before=state.get("seconds", 0.0),
    )
    start = progress.start_epoch
    progress.phase = phase_of(max(0, start - 1), options) if start else None
    if (
        progress.phase is not None
        and progress.phase == phase_of(start, options)
        and start < options.epochs
    ):
        progress.optimizer = _make_optimizer(model, progress.phase, options)
        _load_optimizer(progress.optimizer, checkpoint_dir, state["optimizer_groups"])
    return progress


class _EpochRunner:
    """One pass over the training pages in the epoch's seeded order."""

    def __init__(
        self,
        model: EarlyExitModel,
        inputs: Inputs,
        labels: torch.Tensor,
        options: TrainOptions,
        deadline: float | None,
    ) -> None:
        self.model, self.inputs, self.labels = model, inputs, labels
        self.options, self.deadline = options, deadline
        self.steps_per_epoch = max(1, math.ceil(len(labels) / options.batch_size))
        self.weights = exit_weights(model.num_stages).to(model.device)
        self.empty = empty_text(model, trimmed=False) if options.text_dropout > 0 else None
        self.bf16 = resolve_precision(options.precision) == "bf16" and model.device.type == "cpu"
        self.white = normalised_white(model)  # the raster exit's shifted margins

    def run(self, epoch: int, progress: _Progress) -> float | None:
        """The epoch's mean loss, or None when the deadline cut it short."""
        options, model, phase = self.options, self.model, progress.phase
        assert phase is not None and progress.optimizer is not None
        total_steps = _phase_epochs(phase, options) * self.steps_per_epoch
        phase_step0 = _phase_start(phase, options) * self.steps_per_epoch
        model.train()
        if phase == "exits":  # frozen backbone: no dropout noise in the features exits learn from
            model.backbone.eval()
        # Seeded per epoch (order and dropout), so a resumed run repeats the uninterrupted one.
        torch.manual_seed(options.seed * 1000 + epoch + 1)
        order = torch.randperm(
            len(self.labels), generator=torch.Generator().manual_seed(options.seed * 1000 + epoch)
        )
        bar = tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {epoch + 1}/{options.epochs} [{phase}]",
            disable=None if options.progress else True,  # None: drawn on a terminal only
            leave=False,
        )
        running = 0.0
        for b in bar:
            if self.deadline and time.monotonic() > self.deadline:
                bar.close()
                return None
            idx = order[b * options.batch_size : (b + 1) * options.batch_size]
            _set_lr(progress.optimizer, options, progress.step - phase_step0, total_steps)
            running += self._step(progress.optimizer, idx, phase)
            progress.step += 1
            bar.set_postfix(loss=f"{running / (b + 1):.3f}")
        bar.close()
        return running / self.steps_per_epoch

    def _step(self, optimizer: torch.optim.Optimizer, idx: torch.Tensor, phase: str) -> float:
        batch = take(self.inputs, idx)
        if self.empty is not None:  # seeded: run() seeds torch per epoch
            dropped = torch.rand(len(idx)) < self.options.text_dropout
            batch = without_text(batch, self.empty, dropped)
        labels = self.labels.index_select(0, idx).to(self.model.device)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self._loss(batch, labels, phase)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        optimizer.step()
        return float(loss.detach())

    def _loss(self, batch: Inputs, labels: torch.Tensor, phase: str) -> torch.Tensor:
        # The raster exit has weights of its own: its loss joins every phase's unweighted.
        raster = 0.0 if self.model.raster_exit is None else F.cross_entropy(
            self.model.raster_exit(shifted(batch["pixel_values"], self.white)), labels)
        return raster + self._exit_loss(batch, labels, phase)

    def _exit_loss(self, batch: Inputs, labels: torch.Tensor, phase: str) -> torch.Tensor:
        model = self.model
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
            loss = (ce * self.weights).sum()
        right = (logits[-1].detach().argmax(-1) == labels).float()
        gate = torch.stack(
            [F.binary_cross_entropy_with_logits(g, right) for g in gates[:-1]]
        ).mean()
        return loss + self.options.gate_weight * gate


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
    path: Path,
    progress: _Progress,
    options: TrainOptions,
    seconds: float,
) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
        str(path / "model.safetensors"),
    )
    assert progress.optimizer is not None
    opt = progress.optimizer.state_dict()
    tensors = {}
    for pid, st in opt["state"].items():
        for key, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{pid}.{key}"] = t.detach().contiguous().cpu()
    save_file(tensors, str(path / "optimizer.safetensors"))
    state = {
        "epochs_done": len(progress.history),  # one record per finished epoch
        "step": progress.step,
        "history": progress.history,
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
