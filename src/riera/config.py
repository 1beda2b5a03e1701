"""Settings: one frozen, validated object, layered.

Precedence, highest first: explicit arguments (``riera.init(workers=4)`` or CLI flags) >
``RIERA_*`` environment variables > ``riera.toml`` (in the working directory, or the file named by
``RIERA_CONFIG``) > defaults. ``riera config`` prints the effective values and where each came from.

The layers are merged here and validated by one pydantic model. pydantic-settings would do the
merging too, but importing it cost 80 ms of a cold start whose whole budget is 500 ms (it loads
``asyncio`` and every source type); three flat layers need a dozen lines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from riera.errors import ConfigError

ENV_PREFIX = "RIERA_"


def _default_workers() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def config_file() -> Path:
    """The TOML file settings are read from (may not exist)."""
    return Path(os.environ.get("RIERA_CONFIG", "riera.toml"))


class Settings(BaseModel):
    """Effective Riera settings. Immutable; make a changed copy with :meth:`replace`; build them
    from the layers with :func:`load_settings`."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    workers: int = Field(
        default_factory=_default_workers,
        ge=1,
        le=1024,
        description="worker processes in the local pool",
    )
    executor: str = Field(
        "local",
        description="what runs the tasks: local (a pool of worker processes) or inprocess (the "
        "driver itself, one task at a time: breakpoints and pdb work, same semantics)",
    )
    inline_bytes: int = Field(
        2**20,
        ge=0,
        description="a run whose sources hold at most this many bytes and that calls no Python "
        "function or program of yours runs in the driver (the inprocess executor): no worker "
        "starts for it; 0: every run goes to the executor",
    )
    exchange: str = Field(
        "auto",
        description="how stages pass data: auto (shared memory when the run fits, else the "
        "remote store or disk), shm, shm-pickle, disk, s3, redis",
    )
    shm_dir: Path = Field(
        Path("/dev/shm"), description="tmpfs directory holding shared-memory segments"
    )
    partition_bytes: int = Field(
        64 * 2**20, ge=1024, description="target input bytes per partition when splitting files"
    )
    broadcast_bytes: int = Field(
        64 * 2**20,
        ge=0,
        description="a join side whose sources hold at most this many bytes (and are small "
        "beside the other side) is read whole by every task of the other side instead of both "
        "being shuffled; 0: never",
    )
    sort_piece_bytes: int = Field(
        2**20,
        ge=1,
        description="smallest piece of a sorted map block stored for exchanges that cannot "
        "slice in place (s3, redis, shm-pickle), so each reducer fetches only its pieces",
    )
    max_task_retries: int = Field(3, ge=0, description="retries of a task whose worker died")
    memcopy_threads: int = Field(
        default_factory=lambda: min(4, _default_workers()),
        ge=1,
        description="threads copying a table into a shared-memory segment",
    )
    start_method: Literal["forkserver", "spawn", "fork"] = Field(
        "forkserver", description="how worker processes start"
    )
    progress: Literal["auto", "on", "off"] = Field(
        "auto", description="progress bars: auto = only when stderr is a terminal"
    )
    home: Path = Field(Path("~/.riera"), description="Riera's home directory (run records, stores)")
    spill_dir: Path | None = Field(
        None, description="where the disk exchange and shm spills write (default: <home>/spill)"
    )
    shm_budget: int | None = Field(
        None,
        ge=0,
        description="bytes of /dev/shm a run may use before spilling to disk "
        "(default: 80% of what is free when the runtime starts)",
    )
    spill: bool = Field(
        True,
        description="when shared memory is over budget or full, write to disk instead of "
        "failing with ShmFullError",
    )
    confidential: bool = Field(
        False, description="intermediate data never leaves this machine (remote exchanges refused)"
    )
    remote_exchange: Literal["s3", "redis"] | None = Field(
        None, description="where `auto` sends data that does not fit this machine"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis exchange server")
    redis_ttl: int = Field(3600, ge=1, description="seconds before Redis exchange keys expire")
    s3_endpoint: str | None = Field(None, description="S3-compatible endpoint URL (None: AWS)")
    s3_bucket: str = Field("riera-exchange", description="bucket of the S3 exchange")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_access_key: SecretStr | None = Field(None, description="S3 access key id")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret access key")
    s3_format: Literal["ipc", "parquet"] = Field(
        "ipc", description="how the S3 exchange stores tables (Arrow IPC or Parquet+snappy)"
    )
    provenance: Literal["off", "tasks", "records"] = Field(
        "tasks",
        description="provenance capture: off, tasks (runs, stages, tasks, data elements; "
        "record-level lineage only for datasets that opt in with .provenance(records=True)), "
        "or records (record-level lineage everywhere)",
    )
    provenance_dsn: SecretStr | None = Field(
        None,
        description="PostgreSQL DSN of the provenance store (default: SQLite <home>/provenance.db)",
    )
    s3_client: Literal["boto3", "s3fs"] = Field(
        "boto3", description="client library of the S3 exchange (s3fs: pip install 'riera[s3fs]')"
    )
    versioning: bool = Field(
        True,
        description="commit the file groups of read_file_groups and run_program to Git (one "
        "branch per run) when provenance is on",
    )
    versions_dir: Path | None = Field(
        None, description="the bare Git repository of file versions (default: <home>/versions.git)"
    )
    staging_dir: Path | None = Field(
        None,
        description="where run_program stages file groups (default: /dev/shm, memory, when "
        "writable; else the system temp directory)",
    )

    @field_validator("home", "shm_dir", "spill_dir", "versions_dir", "staging_dir")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(os.path.expanduser(str(v)))

    @property
    def provenance_target(self) -> str:
        """Where provenance goes: the PostgreSQL DSN, or the SQLite file under ``home``."""
        if self.provenance_dsn is not None:
            return self.provenance_dsn.get_secret_value()
        return str(self.home / "provenance.db")

    @property
    def versions_repo(self) -> Path | None:
        """The Git repository of file versions, or None when versioning (or provenance, which
        records the versions) is off."""
        if not self.versioning or self.provenance == "off":
            return None
        return self.versions_dir or self.home / "versions.git"

    @property
    def spill_path(self) -> Path:
        """The disk exchange's directory."""
        return self.spill_dir or self.home / "spill"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated); ``None`` values are ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            return self
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as err:
            raise ConfigError(_explain(err)) from err


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the layers; ``overrides`` (not ``None``) win over everything else."""
    values = {**_toml_layer(), **_env_layer()}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_explain(err)) from err


def _env_layer() -> dict[str, str]:
    """``RIERA_<SETTING>`` variables (any case), as strings for the model to parse."""
    fields = {f"{ENV_PREFIX}{name}".upper(): name for name in Settings.model_fields}
    return {fields[k.upper()]: v for k, v in os.environ.items() if k.upper() in fields}


def _toml_layer() -> dict[str, Any]:
    """The settings in the TOML file, if there is one."""
    path = config_file()
    if not path.is_file():
        return {}
    import tomllib

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read the settings file {path}: {err}") from err


def setting_sources(settings: Settings) -> dict[str, str]:
    """Where each effective value came from: 'argument', 'env', the TOML path, or 'default'."""
    toml_path = config_file()
    toml_keys = set(_toml_layer())
    env_keys = set(_env_layer())
    out = {}
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, Path):
            default = Path(os.path.expanduser(str(default)))
        if name in env_keys:
            out[name] = "env"
        elif name in toml_keys:
            out[name] = str(toml_path)
        elif getattr(settings, name) != default:
            out[name] = "argument"
        else:
            out[name] = "default"
    return out


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "settings"
        lines.append(
            f"setting {loc!r} (env {ENV_PREFIX}{loc.upper()}, or {config_file()}): {e['msg']}; "
            f"got {e.get('input')!r}"
        )
    return "invalid Riera settings:\n  " + "\n  ".join(lines)
