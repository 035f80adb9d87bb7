"""Which evaluation-gate outcomes keep a model version out of ``production``: one rule that the trainer (before
it registers) and the registry (on every way into production: registration, stage change) share.

A gate passes, fails, or is skipped. A skipped gate is one of two kinds:

- *not applicable*: there was nothing to check against (no production version yet for the holdout gate to
  compare with; no sensitive attribute declared for the fairness gate). It blocks nothing.
- *not evaluated*: the check was asked for or possible in principle but could not run (the production version
  reads a feature this dataset lacks, so the holdout comparison could not be made; too few rows per group).
  It blocks production like a failure: nobody knows whether the new model is worse.

A blocked promotion goes through only when forced, with a reason, by a caller allowed to promote; the
registry records it in the audit trail as :data:`FORCED_ACTION`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: The audit action of a production stage forced past blocking gates.
FORCED_ACTION = "stage.forced"


def blocks_production(gate: Mapping[str, Any]) -> bool:
    """Whether this gate outcome (a gate's dict: ``passed``, ``skipped``, ``not_applicable``) blocks production.
    A malformed record blocks: missing keys read as the unsafe answer."""
    if gate.get("skipped", False):
        return not gate.get("not_applicable", False)
    return not gate.get("passed", False)


def production_blockers(gates: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [g for g in gates if blocks_production(g)]


def describe(blockers: Iterable[Mapping[str, Any]]) -> str:
    """``gate holdout skipped (why); gate fairness failed (why)``."""
    return "; ".join(
        f"gate {g.get('name') or '?'} {'skipped' if g.get('skipped') else 'failed'}"
        + (f" ({g['reason']})" if g.get("reason") else "")
        for g in blockers
    )


def refusal(what: str, blockers: Iterable[Mapping[str, Any]]) -> str:
    """The message a refused production stage gives: what, why, and how to go on."""
    return (f"{what} cannot go to production: {describe(blockers)}. Keep it in candidate (or shadow/canary) "
            "and evaluate it there, or force it with force=true and a reason (needs the promote permission; "
            "audited)")
