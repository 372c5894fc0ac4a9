"""Dispatch section of the configuration: how incidents are classified and who is sent."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DispatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Turn transcripts into incidents and alerts.")
