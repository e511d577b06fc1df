"""The base of every params model, params.py's and each source's (pipeline/sources/): strict and frozen.

It lives apart from params.py because the source modules that params.py imports need it too. Models built on it
hold no default values: params.yaml is the one place a default is written (see `params.defaults`).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """An unknown key fails validation ("unknown key"); a validated value cannot be changed afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True)
