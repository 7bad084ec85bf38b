"""``Settings``: the one configuration object.

Precedence, lowest first: defaults < ``~/.config/sciagent/config.toml`` < ``./sciagent.toml`` <
environment (``SCIAGENT_*``) < CLI flags (applied by the CLI on top of a loaded ``Settings``).
"""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def user_config_file() -> Path:
    """The per-user config file (it may not exist)."""
    return Path(platformdirs.user_config_dir("sciagent")) / "config.toml"


class Settings(BaseSettings):
    """Where runs go and how chatty sciagent is; later layers add model and site profiles here."""

    model_config = SettingsConfigDict(env_prefix="SCIAGENT_", extra="ignore")

    workspace: Path = Path("sciagent-runs")
    log_level: str = "WARNING"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: init (CLI) > env > ./sciagent.toml > user config.
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, Path("sciagent.toml")),
            TomlConfigSettingsSource(settings_cls, user_config_file()),
        )
