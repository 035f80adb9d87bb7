"""Stage spellings against the role check: a scientist may stage up to ``canary`` but never set
``production`` or ``archived``, however the stage is spelled (case, spaces, tabs) and whichever way it
comes in: the REST stage change, gRPC ``SetStage``, ``RegisterModelVersion(stage=...)``, a training job
over REST or gRPC. Each is refused (403 / PERMISSION_DENIED) and the version keeps its stage; a stage
that is no stage at all is bad input (400 / INVALID_ARGUMENT), whoever sends it."""

from __future__ import annotations

import grpc
import httpx
import pytest

from mlops.v1 import registry_pb2, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.security import support
from tests.security.conftest import SecureStack

ADMIN_SPELLINGS = ["Production", "production ", "PRODUCTION", " pRoDuCtIoN\t", "ARCHIVED", "Archived\n",
                   "production", "archived"]
#: fullwidth letters and a dotted capital I lower-case to something else than "production"
NOT_STAGES = ["prod", "production;archived", "pro duction", "staging", "production\x00",
              "\uff50\uff52\uff4f\uff44\uff55\uff43\uff54\uff49\uff4f\uff4e", "PRODUCT\u0130ON"]
JOB = {"model": "stage-job", "stream": "s", "features": ["a"], "label": "b"}


@pytest.fixture(scope="module")
def candidate(secure: SecureStack) -> tuple[str, str]:
    """A scientist's model with one version at candidate."""
    model = support.new_model("stages")
    return model, support.register(secure, "scientist", model).version


def _rest_stage(secure: SecureStack, role: str, model: str, version: str, stage: str) -> httpx.Response:
    with secure.http(role) as http:
        return http.post(secure.url("registry", f"/v1/models/{model}/versions/{version}/stage"),
                         json={"stage": stage, "reason": "adversarial suite"})


def _set_stage(secure: SecureStack, role: str, model: str, version: str, stage: str) -> registry_pb2.ModelVersion:
    with grpc.insecure_channel(secure.grpc("registry")) as channel:
        return registry_pb2_grpc.RegistryServiceStub(channel).SetStage(
            registry_pb2.SetStageRequest(model=model, version=version, stage=stage, reason="adversarial suite"),
            metadata=support.metadata(secure, role), timeout=30)


def _submit_job(secure: SecureStack, role: str, stage: str) -> trainer_pb2.TrainingJob:
    with grpc.insecure_channel(secure.grpc("trainer")) as channel:
        return trainer_pb2_grpc.TrainerServiceStub(channel).SubmitJob(
            trainer_pb2.TrainingJobSpec(model="stage-job", stream="s", features=["a"], label="b", stage=stage),
            metadata=support.metadata(secure, role), timeout=30)


@pytest.mark.parametrize("stage", ADMIN_SPELLINGS, ids=repr)
def test_a_scientist_cannot_reach_an_admin_stage_over_rest(secure: SecureStack, candidate: tuple[str, str],
                                                           stage: str) -> None:
    model, version = candidate
    r = _rest_stage(secure, "scientist", model, version, stage)
    assert r.status_code == 403, (stage, r.status_code, r.text)
    assert support.version_stage(secure, model, version) == "candidate"


@pytest.mark.parametrize("stage", ADMIN_SPELLINGS, ids=repr)
def test_a_scientist_cannot_reach_an_admin_stage_over_grpc(secure: SecureStack, candidate: tuple[str, str],
                                                           stage: str) -> None:
    model, version = candidate
    code, details = support.refused_code(lambda: _set_stage(secure, "scientist", model, version, stage))
    assert code == grpc.StatusCode.PERMISSION_DENIED, (stage, code, details)
    assert support.version_stage(secure, model, version) == "candidate"


@pytest.mark.parametrize("stage", ADMIN_SPELLINGS, ids=repr)
def test_a_scientist_cannot_register_straight_into_an_admin_stage(secure: SecureStack, stage: str) -> None:
    model = support.new_model("stages-register")
    code, details = support.refused_code(lambda: support.register(secure, "scientist", model, stage=stage))
    assert code == grpc.StatusCode.PERMISSION_DENIED, (stage, code, details)
    with secure.http("admin") as http:
        assert http.get(secure.url("registry", f"/v1/models/{model}")).status_code == 404


@pytest.mark.parametrize("stage", ADMIN_SPELLINGS, ids=repr)
def test_a_scientist_cannot_have_the_trainer_register_in_an_admin_stage(secure: SecureStack, stage: str) -> None:
    with secure.http("scientist") as http:
        r = http.post(secure.url("trainer", "/v1/training-jobs"), json={**JOB, "stage": stage})
    assert r.status_code == 403, (stage, r.status_code, r.text)
    code, details = support.refused_code(lambda: _submit_job(secure, "scientist", stage))
    assert code == grpc.StatusCode.PERMISSION_DENIED, (stage, code, details)


@pytest.mark.parametrize("stage", NOT_STAGES, ids=repr)
def test_a_stage_that_is_no_stage_is_bad_input_everywhere(secure: SecureStack, candidate: tuple[str, str],
                                                          stage: str) -> None:
    model, version = candidate
    for role in ("scientist", "admin"):
        r = _rest_stage(secure, role, model, version, stage)
        assert r.status_code == 400, (role, stage, r.status_code, r.text)
        code, _ = support.refused_code(lambda: _set_stage(secure, role, model, version, stage))  # noqa: B023
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (role, stage, code)
        code, _ = support.refused_code(lambda: support.register(secure, role, model, stage=stage))  # noqa: B023
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (role, stage, code)
        with secure.http(role) as http:
            r = http.post(secure.url("trainer", "/v1/training-jobs"), json={**JOB, "stage": stage})
        assert r.status_code == 400, (role, stage, r.status_code, r.text)
    assert support.version_stage(secure, model, version) == "candidate"


def test_the_spellings_mean_the_stage_for_whoever_may_set_it(secure: SecureStack) -> None:
    """The other side of the check: the same spellings work for a role that holds the permission, and the
    registry stores the normalised stage (so the refusals above are about the role, not the spelling)."""
    model = support.new_model("stages-allowed")
    version = support.register(secure, "scientist", model).version
    assert _rest_stage(secure, "scientist", model, version, " Shadow ").status_code == 200
    assert support.version_stage(secure, model, version) == "shadow"
    assert _set_stage(secure, "scientist", model, version, "CANARY").stage == "canary"
    r = _rest_stage(secure, "admin", model, version, "Production ")
    assert r.status_code == 200, r.text
    assert support.version_stage(secure, model, version) == "production"
    assert _set_stage(secure, "admin", model, version, "ARCHIVED").stage == "archived"
