"""Types of explainer and embedder options: `method.accepts` checks given options against the
annotations of a component's signature (strictly) before anything is built or loaded."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Name = Annotated[str, Field(min_length=1)]
Count = Annotated[int, Field(ge=1)]
Retries = Annotated[int, Field(ge=0, le=100)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Backoff = Annotated[float, Field(ge=0, allow_inf_nan=False)]
