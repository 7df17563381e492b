"""The Alertmanager webhook payload (version 4), as Alertmanager sends it.

Validation is strict where a wrong value would mislead the agent (``version``, ``status``, an empty ``alerts``
list) and lenient where real senders differ (a missing ``fingerprint``, ``generatorURL`` or per-alert ``status``,
Alertmanager's ``0001-01-01`` zero time for "no end").
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AlertStatus = Literal["firing", "resolved"]


class WebhookAlert(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    status: AlertStatus | None = None
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str | None = None

    @field_validator("ends_at", mode="after")
    @classmethod
    def _zero_time_means_unset(cls, value: datetime | None) -> datetime | None:
        # Alertmanager encodes "no end time" as Go's zero time, 0001-01-01T00:00:00Z.
        if value is not None and value.year <= 1:
            return None
        return value


class AlertmanagerWebhook(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    version: Literal["4"]
    status: AlertStatus
    receiver: str = ""
    group_key: str | None = Field(default=None, alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[WebhookAlert] = Field(min_length=1)

    @model_validator(mode="after")
    def _alerts_inherit_notification_status(self) -> AlertmanagerWebhook:
        for alert in self.alerts:
            if alert.status is None:
                alert.status = self.status
        return self
