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
        ({"features": ["a", "a"]}, "features"),
        ({"label": "a"}, "label"),
        ({"stage": "prod"}, "stage"),
        ({"epochs": 101}, "epochs"),
        ({"epochs": -1}, "epochs"),
        ({"seed": -5}, "seed"),
        ({"recent_rows": -1}, "recent_rows"),
        ({"processes": 99}, "processes"),
        ({"fairness_max_gap": 1.5}, "fairness_max_gap"),
        ({"sensitive_attribute": "y"}, "sensitive_attribute"),
    ],
)
def test_bad_specs_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_spec(spec(**kw), default_epochs=30, max_epochs=100)
    assert err.value.field == field


def test_empty_stream_features_and_label_mean_inherit_from_production() -> None:
    s = validate_spec(JobSpec(model="churn", recent_rows=2000), default_epochs=30, max_epochs=100)
    assert s.inherits and (s.stream, s.features, s.label, s.recent_rows, s.stage) == ("", [], "", 2000, "candidate")
    assert not validate_spec(spec(), default_epochs=30, max_epochs=100).inherits


def test_job_round_trips_through_redis_and_proto() -> None:
    job = Job(
        id="j1",
        spec=spec(epochs=5, seed=3, recent_rows=100, sensitive_attribute="sex", processes=2),
        state="succeeded",
        progress=1.0,
        run_id="r",
        version="2",
        metrics={"accuracy": 0.5},
        request_id="req",
        dataset_id="ds",
        gates=[{"name": "holdout", "passed": True}],
        inherited_from="churn/3",
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
    assert msg.spec.recent_rows == 100
    back = JobSpec.from_proto(msg.spec)  # the proto carries no gate or process settings (REST only)
    assert (back.model, back.features, back.recent_rows, back.sensitive_attribute) == ("churn", ["a", "b"], 100, "")
    d = job.to_dict()
    assert {"id", "state", "progress", "run_id", "model", "version", "error", "metrics"} <= d.keys()
    assert d["model"] == "churn" and d["created_at"].startswith("1970-01-01")
