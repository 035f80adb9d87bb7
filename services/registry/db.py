"""The registry's tables (SQLAlchemy 2 declarative) and engine set-up for SQLite or PostgreSQL.

Every stage transition is a row: who, when, why. The transitions table doubles as the outbox for
``models.lifecycle``: a row's id is the event's sequence number and ``published`` says whether it went out.
:func:`upgrade_schema` adds the columns and indexes a database made by an older version lacks (additive
changes only), so an existing ``registry.db`` keeps working.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.pool import StaticPool


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:  # type: ignore[no-untyped-def]
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    runs: Mapped[list[Run]] = relationship(back_populates="experiment")


class Run(Base):
    """A training run and the environment it ran in."""

    __tablename__ = "runs"
    __table_args__ = (
        # A caller that may retry creating a run sends a key; the second call finds the first run.
        Index(
            "uq_run_key",
            "experiment_id",
            "run_key",
            unique=True,
            sqlite_where=text("run_key != ''"),
            postgresql_where=text("run_key != ''"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="finished")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    dataset_id: Mapped[str] = mapped_column(String(200), default="")
    git_commit: Mapped[str] = mapped_column(String(100), default="")
    git_dirty: Mapped[bool] = mapped_column(Boolean, default=False)
    python_version: Mapped[str] = mapped_column(String(100), default="")
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    hardware: Mapped[str] = mapped_column(String(300), default="")
    definitions_hash: Mapped[str] = mapped_column(String(100), default="", server_default="")
    diff_sha256: Mapped[str] = mapped_column(String(64), default="", server_default="")
    pip_freeze: Mapped[str] = mapped_column(Text, default="", server_default="")
    run_key: Mapped[str] = mapped_column(String(200), default="", server_default="")
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    gates_json: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    experiment: Mapped[Experiment] = relationship(back_populates="runs")
    params: Mapped[list[RunParam]] = relationship(cascade="all, delete-orphan", order_by="RunParam.key")
    metrics: Mapped[list[RunMetric]] = relationship(
        cascade="all, delete-orphan", order_by="(RunMetric.key, RunMetric.step, RunMetric.id)"
    )
    tags: Mapped[list[RunTag]] = relationship(cascade="all, delete-orphan", order_by="RunTag.key")
    artifacts: Mapped[list[RunArtifact]] = relationship(cascade="all, delete-orphan", order_by="RunArtifact.name")


class RunParam(Base):
    __tablename__ = "run_params"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RunMetric(Base):
    """One point of a metric's history: value at a step and a time."""

    __tablename__ = "run_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    key: Mapped[str] = mapped_column(String(250))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int] = mapped_column(Integer, default=0)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunTag(Base):
    __tablename__ = "run_tags"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RunArtifact(Base):
    """A named file of a run (for example the ONNX export), stored content-addressed like model artifacts."""

    __tablename__ = "run_artifacts"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(250), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RegisteredModel(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    versions: Mapped[list[ModelVersionRow]] = relationship(back_populates="model", order_by="ModelVersionRow.number")


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "number", name="uq_model_version"),
        # The database itself refuses a second production version of a model.
        Index(
            "uq_one_production",
            "model_id",
            unique=True,
            sqlite_where=text("stage = 'production'"),
            postgresql_where=text("stage = 'production'"),
        ),
        # A repeated registration key names the version the first registration made.
        Index(
            "uq_version_idempotency_key",
            "model_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key != ''"),
            postgresql_where=text("idempotency_key != ''"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    stage: Mapped[str] = mapped_column(String(20))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    artifact_format: Mapped[str] = mapped_column(String(50))
    artifact_size: Mapped[int] = mapped_column(Integer)
    signature_json: Mapped[str] = mapped_column(Text)
    reference_sha256: Mapped[str] = mapped_column(String(64), default="", server_default="")
    idempotency_key: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stage_updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    model: Mapped[RegisteredModel] = relationship(back_populates="versions")
    run: Mapped[Run] = relationship()
    transitions: Mapped[list[StageTransition]] = relationship(
        back_populates="model_version", order_by="StageTransition.id"
    )


class StageTransition(Base):
    """A registration (from stage "") or a stage change, and the lifecycle event it owes."""

    __tablename__ = "stage_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    from_stage: Mapped[str] = mapped_column(String(20), default="")
    to_stage: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published: Mapped[bool] = mapped_column(Boolean, default=False, index=True)

    model_version: Mapped[ModelVersionRow] = relationship(back_populates="transitions")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite the parent directory is created and WAL + foreign keys turned on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        in_memory = not db or db == ":memory:"
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # One shared connection, or each thread would see its own empty in-memory database.
            **({"poolclass": StaticPool} if in_memory else {}),
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if not in_memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade_schema(engine: Engine) -> list[str]:
    """Create what is missing: tables, then columns of existing tables, then indexes. Returns what it added.

    Only additive changes are made; every new column has a server default, so old rows read as empty.
    """
    added: list[str] = []
    existing = set(inspect(engine).get_table_names())
    Base.metadata.create_all(engine)
    added += [f"table {t}" for t in Base.metadata.tables if t not in existing]
    insp = inspect(engine)
    with engine.begin() as conn:
        for name, table in Base.metadata.tables.items():
            if name not in existing:
                continue
            have = {c["name"] for c in insp.get_columns(name)}
            for column in table.columns:
                if column.name not in have:
                    conn.execute(text(f"ALTER TABLE {name} ADD COLUMN {_column_ddl(column, engine)}"))
                    added.append(f"column {name}.{column.name}")
    for table in Base.metadata.tables.values():
        for index in table.indexes:
            index.create(engine, checkfirst=True)
    return added


def _column_ddl(column: Column, engine: Engine) -> str:  # type: ignore[type-arg]
    ddl = f"{column.name} {column.type.compile(dialect=engine.dialect)}"
    default = column.server_default
    if default is not None:
        arg = getattr(default, "arg", "")
        ddl += f" DEFAULT '{arg}'" if isinstance(arg, str) else ""
    elif column.nullable:
        ddl += " NULL"
    return ddl
