"""The contract's environment variables (a ``.env`` file is read too), validated once at start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.durations import parse_duration
from models.incident import IncidentSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "incidents"

    http_host: str = "0.0.0.0"  # noqa: S104 - the front door must be reachable by Alertmanager
    http_port: int = 8080
    webhook_token: SecretStr | None = None
    api_token: SecretStr | None = None

    prometheus_url: str | None = None
    loki_url: str | None = None
    loki_tenant: str | None = None
    alertmanager_url: str | None = None

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    llm_model: str | None = None

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_channel: str | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"

    approval_timeout: Annotated[float, NoDecode] = 15 * 60
    verify_after: Annotated[float, NoDecode] = 5 * 60
    resolve_wait: Annotated[float, NoDecode] = 24 * 3600
    # A closed incident stays open this long for a verdict on its diagnosis (0: it completes when it closes).
    feedback_window: Annotated[float, NoDecode] = 24 * 3600
    approvers: Annotated[list[str], NoDecode] = Field(default_factory=list)

    policy_file: Path = PROJECT_ROOT / "policy.yaml"
    runbooks_dir: Path = PROJECT_ROOT / "runbooks"
    # DRY_RUN: unset lets the policy file's dry_run decide (true in the shipped policy.yaml).
    dry_run: bool | None = None

    # METRICS_PORT: the worker serves the Temporal SDK's metrics and the agent's own at :<port>/metrics (unset: none).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("approval_timeout", "verify_after", "resolve_wait", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        if isinstance(value, str | int | float):
            return parse_duration(value)
        raise ValueError("expected a duration such as 90s, 5m or 1h")

    @field_validator("feedback_window", mode="before")
    @classmethod
    def _duration_or_zero(cls, value: object) -> float:
        if isinstance(value, str | int | float) and str(value).strip() in ("0", "0.0", "0s"):
            return 0.0  # no window: an incident completes when it closes
        return cls._duration(value)

    @field_validator("approvers", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> list[str]:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            return [str(item).strip() for item in value if str(item).strip()]
        raise ValueError("expected a comma-separated list")

    @field_validator(
        "prometheus_url",
        "loki_url",
        "alertmanager_url",
        "openai_base_url",
        "openai_api_key",
        "llm_model",
        "metrics_port",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def incident_settings(self) -> IncidentSettings:
        """The knobs an incident is started with (frozen into its history for deterministic replay)."""
        return IncidentSettings(
            approval_timeout_s=self.approval_timeout,
            verify_after_s=self.verify_after,
            resolve_wait_s=self.resolve_wait,
            feedback_window_s=self.feedback_window,
            approvers=list(self.approvers),
            llm=self.llm_configured,
        )

    @property
    def llm_configured(self) -> bool:
        """With no key and no base URL the agent runs on its runbooks alone (the contract's rule)."""
        return self.openai_api_key is not None or self.openai_base_url is not None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
