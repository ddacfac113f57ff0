"""The store as the classify runtime's policy feed (classifier.live_policy.PolicyFeed): the
newest stored exit policy of a model version (db.policies), read in its own short transaction.
The runtime in classifier/ gets this callable and never sees SQL."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from db.policies import StoredPolicy, latest_policy
from db.session import session_scope


def stored_policies(
    sessions: Callable[[], sessionmaker[Session]],
) -> Callable[[str], StoredPolicy | None]:
    """`sessions()` gives the process's session factory when a poll runs (a worker builds its
    step context lazily, after fork)."""

    def newest(model_version: str) -> StoredPolicy | None:
        with session_scope(sessions()) as s:
            return latest_policy(s, model_version)

    return newest
