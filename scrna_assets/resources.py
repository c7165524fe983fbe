"""The settings as a Dagster resource, generated from ``settings.Settings`` (each field declared
once there): the assets, the IO manager, the checks and the sensor read it."""

from __future__ import annotations

from typing import Any, Literal, get_origin

from dagster import ConfigurableResource
from pydantic import create_model

from scrna_assets.settings import Settings


def _config_type(annotation: Any) -> Any:
    """Dagster's config takes plain types: a ``Literal`` setting is a string (the model checks it)."""
    return str if get_origin(annotation) is Literal else annotation


class _SettingsResource(ConfigurableResource):
    def model(self) -> Settings:
        return Settings(**{name: getattr(self, name) for name in Settings.model_fields})

    @classmethod
    def of(cls, settings: Settings) -> PipelineSettings:
        return cls(**settings.model_dump())


PipelineSettings = create_model(
    "PipelineSettings",
    __base__=_SettingsResource,
    __doc__="Everything a run needs to know (see ``settings.Settings``).",
    **{name: (_config_type(f.annotation), f.default) for name, f in Settings.model_fields.items()},
)
