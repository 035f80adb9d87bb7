"""Job specs and records: validation with named fields, Redis and protobuf round trips."""

from __future__ import annotations

import pytest

from mlops.errors import InvalidArgument
from services.trainer.jobs import Job, JobSpec, validate_spec


def spec(**kw: object) -> JobSpec:
    base = {"model": "churn", "stream": "clicks", "features": ["a", "b"], "label": "y"}
    return JobSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_defaults_are_filled() -> None:
    s = validate_spec(spec(stage=" Canary ", features=[" a", "b "]), default_epochs=30, max_epochs=100)
    assert (s.stage, s.epochs, s.features) == ("canary", 30, ["a", "b"])
    assert validate_spec(spec(stage=""), default_epochs=30, max_epochs=100).stage == "candidate"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"model": ""}, "model"),
        ({"model": "has space"}, "model"),
        ({"stream": " "}, "stream"),
        ({"features": []}, "features"),
        ({"features": ["a", "a"]}, "features"),
        ({"label": ""}, "label"),
        ({"label": "a"}, "label"),
        ({"stage": "prod"}, "stage"),
        ({"epochs": 101}, "epochs"),
        ({"epochs": -1}, "epochs"),
        ({"seed": -5}, "seed"),
    ],
)
def test_bad_specs_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_spec(spec(**kw), default_epochs=30, max_epochs=100)
    assert err.value.field == field


def test_job_round_trips_through_redis_and_proto() -> None:
    job = Job(
        id="j1",
        spec=spec(epochs=5, seed=3),
        state="succeeded",
        progress=1.0,
        run_id="r",
        version="2",
        metrics={"accuracy": 0.5},
        request_id="req",
        dataset_id="ds",
        created_at=1.0,
        updated_at=2.0,
    )
    raw = {k.encode(): v.encode() for k, v in job.to_redis().items()}
    assert Job.from_redis(raw) == job
    msg = job.to_proto()
    assert (msg.id, msg.state, msg.version, msg.spec.epochs, dict(msg.metrics)) == (
        "j1",
        "succeeded",
        "2",
        5,
        {"accuracy": 0.5},
    )
    assert JobSpec.from_proto(msg.spec) == job.spec
    d = job.to_dict()
    assert {"id", "state", "progress", "run_id", "model", "version", "error", "metrics"} <= d.keys()
    assert d["model"] == "churn" and d["created_at"].startswith("1970-01-01")
