"""The one rule for which gate outcomes keep a version out of production."""

from __future__ import annotations

from mlops import gate_policy


def test_passed_and_not_applicable_gates_do_not_block_skipped_and_failed_ones_do() -> None:
    gates = [
        {"name": "robustness", "passed": True, "skipped": False},
        {"name": "fairness", "passed": True, "skipped": True, "not_applicable": True, "reason": "none declared"},
        {"name": "holdout", "passed": True, "skipped": True, "not_applicable": False, "reason": "lacks c"},
        {"name": "extra", "passed": False, "reason": "worse"},
    ]
    blockers = gate_policy.production_blockers(gates)
    assert [g["name"] for g in blockers] == ["holdout", "extra"]
    assert gate_policy.describe(blockers) == "gate holdout skipped (lacks c); gate extra failed (worse)"
    assert "force" in gate_policy.refusal("m v2", blockers)


def test_a_malformed_record_blocks() -> None:
    assert gate_policy.blocks_production({})
    assert gate_policy.blocks_production({"name": "x", "skipped": True})
