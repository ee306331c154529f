"""``FeatureSpec``: the parameters of a feature set, its name (``hash()``), its columns and its warm-up.

The formulas the parameters feed are described in ``pipeline.features.build``; ``version`` is bumped whenever one of
them changes, so that features computed by different formulas never share a name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.domain import AssetClass

Window = Annotated[int, Field(ge=2)]
Horizon = Annotated[int, Field(ge=1)]
Multiplier = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class FeatureSpec(BaseModel):
    """The parameters of a feature set; ``hash()`` names it. Immutable; unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(default=1, ge=1, description="Version of the formulas; bump when one changes.")
    return_horizons: tuple[Horizon, ...] = (1, 4, 12, 48)
    ma_windows: tuple[Window, ...] = (10, 50, 200)
    rsi_period: Window = 14
    macd: tuple[Horizon, Horizon, Horizon] = (12, 26, 9)
    bollinger: tuple[Window, Multiplier] = (20, 2.0)
    atr_period: Horizon = 14
    vol_windows: tuple[Window, ...] = (30, 120)
    volume_window: Window = 50

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        for name in ("return_horizons", "ma_windows", "vol_windows"):
            values: tuple[int, ...] = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat a value, got {values}")
        fast, slow, _ = self.macd
        if fast >= slow:
            raise ValueError(f"macd fast period must be shorter than the slow one, got {self.macd}")
        return self

    def canonical_json(self) -> str:
        """The spec as JSON with sorted keys and no whitespace: the text that ``hash()`` digests."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """First 12 hex digits of the SHA-256 of ``canonical_json()``: the name of this feature set."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]

    def columns(self, asset_class: AssetClass) -> list[str]:
        """Feature column names in output order (``timestamp`` not included)."""
        fast, slow, signal = self.macd
        macd = f"{fast}_{slow}_{signal}"
        window, k = self.bollinger
        bands = f"{window}_{k:g}"
        names = [f"logret_{h}" for h in self.return_horizons]
        names += [f"sma_dev_{w}" for w in self.ma_windows]
        names += [f"ema_dev_{w}" for w in self.ma_windows]
        names += [f"rsi_{self.rsi_period}", f"macd_{macd}", f"macd_signal_{macd}", f"macd_hist_{macd}"]
        names += [f"bb_pctb_{bands}", f"bb_width_{bands}", f"atr_{self.atr_period}"]
        names += [f"rvol_{w}" for w in self.vol_windows]
        names += [f"volume_z_{self.volume_window}", "bar_range", "tod_sin", "tod_cos", "tow_sin", "tow_cos"]
        if asset_class is AssetClass.STOCK:
            names.append("gap")
        return names

    @property
    def warmup(self) -> int:
        """Rows dropped at the start of ``build_features``: the largest look-back (see the module docstring)."""
        _, slow, signal = self.macd
        lookbacks = [1, self.rsi_period, slow + signal, self.bollinger[0] - 1, self.atr_period]
        lookbacks += list(self.return_horizons)
        lookbacks += [w - 1 for w in self.ma_windows]
        lookbacks += list(self.ma_windows)
        lookbacks += list(self.vol_windows)
        lookbacks.append(self.volume_window - 1)
        return max(lookbacks)
