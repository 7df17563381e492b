"""The Alertmanager webhook payload (version 4), as Alertmanager sends it.

Validation is strict where a wrong value would mislead the agent (``version``, ``status``, an empty ``alerts``
list) and lenient where real senders differ (a missing ``fingerprint``, ``generatorURL`` or per-alert ``status``,
Alertmanager's ``0001-01-01`` zero time for "no end", a timestamp without an offset).

It is also where input that no real sender produces, but that would break the agent further on, is refused with a
400 naming the field: text with unpaired surrogates (it cannot be hashed into the workflow id nor sent to Temporal)
and timestamps the incident's time arithmetic cannot handle.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

AlertStatus = Literal["firing", "resolved"]

# Prometheus timestamps count milliseconds since the Unix epoch, so no alert started before it. The upper bound keeps
# the incident's time arithmetic (onset minus evidence windows, durable timers) far from datetime's year 9999 limit.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _valid_unicode(value: str) -> str:
    # JSON may spell a lone surrogate ("\ud800"); Python keeps it, but it is no text: encoding it (the workflow id
    # is a hash of the group key, Temporal payloads are UTF-8) would fail after validation, as a 500.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                "text contains an unpaired surrogate (\\ud800-\\udfff), which is not valid Unicode"
            ) from None
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]


def _plausible_time(value: datetime) -> datetime:
    """An aware timestamp (naive ones are UTC) in [1970, 9000); the offset it came with is kept."""
    if value.tzinfo is None:
        # A sender that omits the offset means UTC (Alertmanager always sends one); a naive time next to aware ones
        # would make every comparison between the group's alerts raise.
        value = value.replace(tzinfo=UTC)
    try:
        in_range = EARLIEST <= value < LATEST
    except OverflowError:  # an offset that pushes it past year 1 or 9999
        in_range = False
    if not in_range:
        raise ValueError(f"timestamp must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value


class WebhookAlert(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    status: AlertStatus | None = None
    labels: dict[Text, Text]
    annotations: dict[Text, Text] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: Text = Field(default="", alias="generatorURL")
    fingerprint: Text | None = None

    @field_validator("starts_at", mode="after")
    @classmethod
    def _plausible_start(cls, value: datetime) -> datetime:
        return _plausible_time(value)

    @field_validator("ends_at", mode="after")
    @classmethod
    def _zero_time_means_unset(cls, value: datetime | None) -> datetime | None:
        # Alertmanager encodes "no end time" as Go's zero time, 0001-01-01T00:00:00Z.
        if value is None or value.year <= 1:
            return None
        return _plausible_time(value)


class AlertmanagerWebhook(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    version: Literal["4"]
    status: AlertStatus
    receiver: Text = ""
    group_key: Text | None = Field(default=None, alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    group_labels: dict[Text, Text] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[Text, Text] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[Text, Text] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: Text = Field(default="", alias="externalURL")
    alerts: list[WebhookAlert] = Field(min_length=1)

    @model_validator(mode="after")
    def _alerts_inherit_notification_status(self) -> AlertmanagerWebhook:
        for alert in self.alerts:
            if alert.status is None:
                alert.status = self.status
        return self
