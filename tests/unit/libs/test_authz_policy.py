"""The one authorisation decision: stages normalised with the registry's own function before the
permission check, REST and gRPC alike; the roles' invariants; the refusal audit's rate limit."""

from __future__ import annotations

import pytest

from mlops.auth import policy
from mlops.auth.refusals import AuditLimiter
from mlops.auth.tokens import ROLES
from mlops.errors import InvalidArgument
from mlops.stages import STAGES, normalize_stage
from mlops.v1 import registry_pb2, trainer_pb2
from services.registry import stages as registry_stages

SPELLINGS = ["production", "Production", "PRODUCTION", "production ", " Production\t", "pRoDuCtIoN\n"]


def test_the_registry_normalises_with_the_function_the_policy_uses() -> None:
    assert registry_stages.normalize_stage is normalize_stage
    assert registry_stages.STAGES == STAGES


@pytest.mark.parametrize("spelling", [*SPELLINGS, "archived", "ARCHIVED", " Archived "])
def test_every_spelling_of_an_admin_stage_needs_promote(spelling: str) -> None:
    rest = policy.rest_stage_default("POST", "/v1/models/m/versions/1/stage")
    assert policy.permissions_for("stage", spelling, rest) == ("stage", "promote")  # type: ignore[arg-type]
    for method, request in [
        ("/mlops.v1.RegistryService/SetStage", registry_pb2.SetStageRequest(model="m", version="1", stage=spelling)),
        ("/mlops.v1.RegistryService/RegisterModelVersion",
         registry_pb2.RegisterModelVersionRequest(model="m", stage=spelling)),
        ("/mlops.v1.TrainerService/SubmitJob", trainer_pb2.TrainingJobSpec(model="m", stage=spelling)),
    ]:
        needed = policy.grpc_permissions(method, request)
        assert "promote" in needed, (method, spelling)
        assert policy.missing("scientist", needed) == "promote"
        assert policy.missing("admin", needed) is None


def test_training_jobs_over_rest_need_promote_for_production() -> None:
    default = policy.rest_stage_default("POST", "/v1/training-jobs")
    assert policy.rest_permission("POST", "/v1/training-jobs") == "train"
    assert policy.permissions_for("train", "Production", default) == ("train", "promote")  # type: ignore[arg-type]
    assert policy.permissions_for("train", None, default) == ("train",)  # type: ignore[arg-type]
    assert policy.permissions_for("train", "shadow", default) == ("train", "stage")  # type: ignore[arg-type]


def test_unstaged_routes_are_not_read_for_a_stage() -> None:
    assert not policy.is_staged(policy.rest_stage_default("PUT", "/v1/runs/r/files/stage"))
    assert not policy.is_staged(policy.rest_stage_default("POST", "/v1/runs"))
    assert policy.grpc_permissions("/mlops.v1.RegistryService/GetModelVersion",
                                   registry_pb2.ModelVersionRef(model="m")) == ("read",)


@pytest.mark.parametrize("bad", ["prod", "", "production2", 3, ["production"], {"x": 1}, "pro duction"])
def test_a_stage_that_does_not_normalise_is_bad_input(bad: object) -> None:
    with pytest.raises(InvalidArgument) as err:
        policy.permissions_for("stage", bad, None)
    assert err.value.field == "stage"


def test_empty_stage_on_a_registration_is_candidate_and_needs_only_register() -> None:
    request = registry_pb2.RegisterModelVersionRequest(model="m")
    assert policy.grpc_permissions("/mlops.v1.RegistryService/RegisterModelVersion", request) == ("register",)
    # SetStage has no default: an empty stage is bad input, not a free pass.
    with pytest.raises(InvalidArgument):
        policy.grpc_permissions("/mlops.v1.RegistryService/SetStage", registry_pb2.SetStageRequest(model="m"))


def test_the_trainer_registers_at_candidate_only() -> None:
    for stage, ok in [("candidate", True), ("", True), ("shadow", False), ("Canary", False),
                      ("production", False), ("archived", False)]:
        request = registry_pb2.RegisterModelVersionRequest(model="m", stage=stage)
        needed = policy.grpc_permissions("/mlops.v1.RegistryService/RegisterModelVersion", request)
        assert (policy.missing("service-trainer", needed) is None) is ok, stage


def test_service_roles_hold_what_their_calls_need_and_no_more() -> None:
    perms = policy.ROLE_PERMISSIONS
    assert perms["service-reader"] == {"read"}
    assert perms["service-router"] == {"read", "predict", "stage", "promote"}
    assert perms["service-trainer"] == {"read", "train", "register"}
    assert policy.SERVICE_ROLES["inference"] == "service-reader"
    for service, role in policy.SERVICE_ROLES.items():
        assert "admin" not in perms[role] and "tokens" not in perms[role], service
        assert role in ROLES


def test_every_role_is_known_to_the_token_store() -> None:
    assert set(policy.ROLE_PERMISSIONS) == set(ROLES)


def test_the_audit_limiter_bounds_each_caller_and_the_table() -> None:
    now = [0.0]
    limiter = AuditLimiter(burst=3, window_s=60, max_keys=5, clock=lambda: now[0])
    assert [limiter.admit("token:a") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.admit("peer:1.2.3.4")  # another caller has its own budget
    for i in range(100):  # a flood of new addresses cannot grow the table past its bound
        limiter.admit(f"peer:10.0.0.{i}")
    assert len(limiter) <= 5
    now[0] = 61.0
    assert limiter.admit("token:a")  # a new window
