"""Device models and their specifications (``devices/models.toml``): the thresholds health checks use.

A model belongs to one kind. Defaults come from the WHO/UNICEF concentrator and PSA plant
specifications; the TOML file names the source of each. Validated on load so a typo in a threshold is a
clear error at startup, not a silent misclassification later.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devices.spec import Kind

__all__ = ["DEFAULT_MODELS_FILE", "CatalogError", "ModelSpec", "load_catalog"]

DEFAULT_MODELS_FILE: Final = Path(__file__).resolve().parent / "models.toml"


class CatalogError(ValueError):
    """The models file is unreadable or invalid; the message names the model and field."""


class ModelSpec(BaseModel):
    """What one device model is rated for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Kind
    manufacturer: str
    rated_flow_lpm: float = Field(gt=0)
    purity_low_pct: float = Field(ge=0, le=100)
    purity_critical_pct: float = Field(ge=0, le=100)
    purity_max_pct: float = Field(ge=0, le=100)
    outlet_min_kpa: float = Field(ge=0)
    outlet_max_kpa: float = Field(gt=0)
    max_temp_c: float
    report_interval_s: float = Field(gt=0, le=3600)
    service_interval_h: float = Field(gt=0)
    # Patients the model serves a day at its rated flow (planning figure, for report estimates only);
    # unset: one patient for a concentrator, no estimate for a plant.
    patients_at_rated_flow: float | None = Field(None, gt=0)
    # DOCS plants only (None for concentrators): the plant's own measurements, judged on their own.
    product_min_kpa: float | None = Field(default=None, ge=0)
    product_max_kpa: float | None = Field(default=None, gt=0)
    max_compressor_temp_c: float | None = None
    max_dew_point_c: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ModelSpec:
        if not self.purity_critical_pct <= self.purity_low_pct <= self.purity_max_pct:
            msg = "need purity_critical_pct <= purity_low_pct <= purity_max_pct"
            raise ValueError(msg)
        if self.outlet_min_kpa >= self.outlet_max_kpa:
            msg = "need outlet_min_kpa < outlet_max_kpa"
            raise ValueError(msg)
        plant = (self.product_min_kpa, self.product_max_kpa, self.max_compressor_temp_c, self.max_dew_point_c)
        if self.kind == "docs" and None in plant:
            msg = (
                "a docs model needs product_min_kpa, product_max_kpa, max_compressor_temp_c, max_dew_point_c"
            )
            raise ValueError(msg)
        low, high = self.product_min_kpa, self.product_max_kpa
        if low is not None and high is not None and low >= high:
            msg = "need product_min_kpa < product_max_kpa"
            raise ValueError(msg)
        return self


def load_catalog(path: Path | None = None) -> dict[str, ModelSpec]:
    """All models in the file, by name."""
    path = path or DEFAULT_MODELS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise CatalogError(f"{path}: no [models.<name>] tables")
    out: dict[str, ModelSpec] = {}
    for name, fields in models.items():
        try:
            out[name] = ModelSpec(name=name, **fields)
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'model'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise CatalogError(f"{path}: model {name}: {detail}") from None
        except TypeError as exc:
            raise CatalogError(f"{path}: model {name}: {exc}") from None
    return out
