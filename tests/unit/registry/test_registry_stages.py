"""Stage rules: names, one production per model, rollback targets, aliases."""

from __future__ import annotations

import pytest

from mlops.errors import Conflict, InvalidArgument
from services.registry import stages as st


def test_normalize_accepts_known_stages_case_insensitively() -> None:
    assert st.normalize_stage(" Production ") == "production"
    assert st.normalize_stage("", default="candidate") == "candidate"


@pytest.mark.parametrize("bad", ["prod", "staging", "", "none"])
def test_unknown_stage_is_invalid_argument_naming_stage(bad: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        st.normalize_stage(bad)
    assert err.value.field == "stage"


def test_promotion_demotes_the_previous_production_first() -> None:
    changes = st.plan_transition({1: "production", 2: "canary", 3: "candidate"}, 2, "production")
    assert changes == [st.StageChange(1, "production", "archived"), st.StageChange(2, "canary", "production")]


def test_same_stage_changes_nothing() -> None:
    assert st.plan_transition({1: "production"}, 1, "production") == []


def test_non_production_moves_touch_only_the_version() -> None:
    changes = st.plan_transition({1: "production", 2: "candidate"}, 2, "shadow")
    assert changes == [st.StageChange(2, "candidate", "shadow")]


def test_rollback_target_is_the_previous_production_holder() -> None:
    history = [(1, "candidate"), (1, "production"), (2, "candidate"), (1, "archived"), (2, "production")]
    assert st.rollback_target(history, {1: "archived", 2: "production"}) == 1


def test_rollback_after_rollback_goes_back_again() -> None:
    history = [(1, "production"), (1, "archived"), (2, "production"), (2, "archived"), (1, "production")]
    assert st.rollback_target(history, {1: "production", 2: "archived"}) == 2


def test_rollback_without_a_previous_production_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        st.rollback_target([(1, "candidate"), (1, "production")], {1: "production"})


def test_aliases() -> None:
    stages = {1: "archived", 2: "production", 3: "canary", 4: "candidate", 5: "candidate"}
    assert st.resolve_alias("production", stages) == 2
    assert st.resolve_alias("champion", stages) == 2
    assert st.resolve_alias("latest", stages) == 5
    assert st.resolve_alias("candidate", stages) == 5
    assert st.resolve_alias("3", stages) == 3
    with pytest.raises(LookupError):
        st.resolve_alias("shadow", stages)
    with pytest.raises(InvalidArgument) as err:
        st.resolve_alias("best", stages)
    assert err.value.field == "alias"
    assert st.aliases_of(stages)["canary"] == 3


@pytest.mark.parametrize("alias", ["9" * 19, "9" * 5000])
def test_a_number_too_long_for_a_version_names_none(alias: str) -> None:
    with pytest.raises(LookupError):
        st.resolve_alias(alias, {1: "production"})


@pytest.mark.parametrize("alias", ["\u00b2", "\u0663", "-1", "1.0"])
def test_a_number_that_is_not_ascii_digits_is_no_alias(alias: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        st.resolve_alias(alias, {1: "production", 2: "candidate"})
    assert err.value.field == "alias"
