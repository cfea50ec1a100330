"""The app spec (YAML), validated. docs/app-spec.md documents every key.

Unknown keys are rejected with their name, so a typo never silently does nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bailu.errors import ConfigError

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SUPPORTED_TYPES = ("agent",)


class ModelParameters(BaseModel):
    """Sampling parameters sent to the model; callers may override some per call."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0)


class Variable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    default: str | None = None
    description: str | None = None


class KnowledgeSpec(BaseModel):
    """Knowledge bases searched on every call (``rag_options.pipeline_ids`` replaces them)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_ids: list[str] = Field(default=[], max_length=5)
    top_k: int = Field(default=5, ge=1, le=20)
    threshold: float = Field(default=0.0, ge=0, le=1)
    show_sources: bool = False


class AppSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    type: Literal["agent", "workflow", "orchestration"] = "agent"
    description: str | None = None
    model: str = "default"
    instructions: str = ""
    parameters: ModelParameters = ModelParameters()
    variables: list[Variable] = []
    knowledge: KnowledgeSpec | None = None

    @field_validator("type")
    @classmethod
    def _supported(cls, v: str) -> str:
        if v not in SUPPORTED_TYPES:
            raise ValueError(f"app type {v!r} is not supported by this version of bailu (supported: agent)")
        return v

    def prompt_variables(self) -> list[str]:
        """Names used as ``{{name}}`` in the instructions, in order of first use."""
        return list(dict.fromkeys(VARIABLE.findall(self.instructions)))


def parse_spec(data: Any, source: str = "app spec") -> AppSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return AppSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


def load_spec_file(path: str | Path) -> AppSpec:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_spec(data, str(p))
