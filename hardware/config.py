"""Control-line section of a channel's configuration (PTT, COR/carrier)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class SimulatedLineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["simulated"] = Field(description="A line held in memory, for demos and tests.")


LineConfig = Annotated[SimulatedLineConfig, Field(discriminator="type")]
