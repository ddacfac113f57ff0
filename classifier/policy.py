"""Exit policies: given the calibrated probability trail of a batch so far, which pages exit now.

Every policy answers `decide(stage, trail) -> BoolTensor (B,)`, where `trail` is (B, stage+1, C):
the calibrated class probabilities of each page at every exit it has passed, the current one
last. The final stage always exits. Policies serialise to/from a small JSON dict (exits.json)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class ExitPolicy:
    num_stages: int

    name = "base"

    def decide(self, stage: int, trail: torch.Tensor) -> torch.Tensor:
        if stage >= self.num_stages - 1:
            return torch.ones(trail.shape[0], dtype=torch.bool, device=trail.device)
        return self._decide(stage, trail)

    def _decide(self, stage: int, trail: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_json(self) -> dict:
        raise NotImplementedError


@dataclass
class MaxSoftmax(ExitPolicy):
    """Exit when the top calibrated probability reaches the stage's threshold."""

    thresholds: Sequence[float] = ()

    name = "max_softmax"

    @classmethod
    def global_threshold(cls, num_stages: int, threshold: float) -> MaxSoftmax:
        return cls(num_stages, [threshold] * (num_stages - 1) + [0.0])

    def _decide(self, stage: int, trail: torch.Tensor) -> torch.Tensor:
        return trail[:, -1].max(dim=-1).values >= self.thresholds[stage]

    def to_json(self) -> dict:
        return {"name": self.name, "thresholds": [float(t) for t in self.thresholds]}


@dataclass
class Entropy(ExitPolicy):
    """Exit when the normalised entropy (0 = certain, 1 = uniform) is at most the threshold."""

    threshold: float = 0.1

    name = "entropy"

    def _decide(self, stage: int, trail: torch.Tensor) -> torch.Tensor:
        return normalised_entropy(trail[:, -1]) <= self.threshold

    def to_json(self) -> dict:
        return {"name": self.name, "threshold": float(self.threshold)}


@dataclass
class Patience(ExitPolicy):
    """Exit when the predicted class has stayed the same for `patience` consecutive exits
    (PABEE); optionally also require a minimum confidence."""

    patience: int = 2
    min_confidence: float = 0.0

    name = "patience"

    def _decide(self, stage: int, trail: torch.Tensor) -> torch.Tensor:
        if trail.shape[1] < self.patience:
            return torch.zeros(trail.shape[0], dtype=torch.bool, device=trail.device)
        recent = trail[:, -self.patience :].argmax(dim=-1)
        same = (recent == recent[:, -1:]).all(dim=1)
        return same & (trail[:, -1].max(dim=-1).values >= self.min_confidence)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "patience": int(self.patience),
            "min_confidence": float(self.min_confidence),
        }


@dataclass
class NeverExit(ExitPolicy):
    """Full depth: only the final stage exits."""

    name = "full_depth"

    def _decide(self, stage: int, trail: torch.Tensor) -> torch.Tensor:
        return torch.zeros(trail.shape[0], dtype=torch.bool, device=trail.device)

    def to_json(self) -> dict:
        return {"name": self.name}


def normalised_entropy(probs: torch.Tensor) -> torch.Tensor:
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)
    return ent / math.log(max(2, probs.shape[-1]))


def policy_from_json(spec: dict, num_stages: int) -> ExitPolicy:
    name = spec.get("name")
    if name == "max_softmax":
        if "thresholds" in spec:
            return MaxSoftmax(num_stages, list(spec["thresholds"]))
        return MaxSoftmax.global_threshold(num_stages, float(spec["threshold"]))
    if name == "entropy":
        return Entropy(num_stages, float(spec["threshold"]))
    if name == "patience":
        return Patience(num_stages, int(spec["patience"]), float(spec.get("min_confidence", 0.0)))
    if name == "full_depth":
        return NeverExit(num_stages)
    raise ValueError(f"unknown exit policy {name!r}")


def checked_policy(spec: dict, num_stages: int) -> ExitPolicy:
    """`policy_from_json`, refusing (ValueError, one line) a spec that would not decide
    sensibly for this model: not a dict, an unknown name, max-softmax thresholds that are not
    one number per exit. Used for policies that come from the store, not a bundle."""
    if not isinstance(spec, dict):
        raise ValueError(f"an exit policy is a JSON object, not {type(spec).__name__}")
    try:
        policy = policy_from_json(spec, num_stages)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad exit policy {spec.get('name')!r}: {exc}") from None
    if isinstance(policy, MaxSoftmax):
        th = list(policy.thresholds)
        if len(th) != num_stages or not all(
            isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
            for t in th
        ):
            raise ValueError(f"max_softmax needs {num_stages} finite thresholds, not {th!r}")
    return policy


PRESSURE_SUFFIX = "+pressure"


def policy_version(model_version: str, spec: dict | None, *, pressure: bool = False) -> str:
    """The name of the exit policy in force: the model version and a short hash of the policy's
    JSON (name and thresholds), e.g. `small-858c599e9839+p1a2b3c4d`; the policy a runtime uses
    under backlog pressure (its looser budget) ends in `+pressure`, so `audit loss --by version`
    splits the loss by it. Stored with every prediction so an audit can tell answers decided by
    different thresholds of one model apart. The one place this name is made."""
    text = json.dumps(spec or {}, sort_keys=True, separators=(",", ":"))
    name = f"{model_version}+p{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return name + PRESSURE_SUFFIX if pressure else name


def is_pressure_version(version: str | None) -> bool:
    return bool(version) and str(version).endswith(PRESSURE_SUFFIX)
