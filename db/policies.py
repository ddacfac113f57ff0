"""Exit policies in the store (table `policies`): `doctriage thresholds tune --apply` adds one,
classify workers poll the newest one of their model version (workers/policy_source.py). The
newest row of a model version (highest id) is in force; rows are never updated, so the table is
the history too. Functions on a Session, never committing; db imports nothing of classifier:
the spec is plain JSON and its version string is made by the caller
(classifier.policy.policy_version)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Policy


@dataclass(frozen=True)
class NewPolicy:
    model_version: str
    policy_version: str
    spec: dict[str, Any]
    created_by: str
    notes: str | None = None
    record: dict[str, Any] | None = None


@dataclass(frozen=True)
class StoredPolicy:
    id: int
    model_version: str
    policy_version: str
    spec: dict[str, Any]
    created_by: str
    notes: str | None
    record: dict[str, Any] | None
    created_at: datetime


def add_policy(s: Session, new: NewPolicy) -> int:
    """Store a policy for its model version; from now on the newest. Returns its id."""
    row = Policy(model_version=new.model_version, policy_version=new.policy_version,
                 spec=dict(new.spec), record=new.record, created_by=new.created_by,
                 notes=new.notes)
    s.add(row)
    s.flush()
    return int(row.id)


def _stored(row: Policy) -> StoredPolicy:
    return StoredPolicy(row.id, row.model_version, row.policy_version, dict(row.spec),
                        row.created_by, row.notes, row.record, row.created_at)


def latest_policy(s: Session, model_version: str) -> StoredPolicy | None:
    """The policy in force for `model_version` (its newest row), None when none is stored."""
    row = s.execute(select(Policy).where(Policy.model_version == model_version)
                    .order_by(Policy.id.desc()).limit(1)).scalar_one_or_none()
    return _stored(row) if row is not None else None


def policy_history(s: Session, model_version: str) -> list[StoredPolicy]:
    """Every stored policy of `model_version`, oldest first."""
    rows = s.execute(select(Policy).where(Policy.model_version == model_version)
                     .order_by(Policy.id)).scalars()
    return [_stored(r) for r in rows]
