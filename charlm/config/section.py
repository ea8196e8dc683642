"""The section base every config section derives from: unknown keys, infinities and integers
beyond 64 bits are refused everywhere."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from charlm.errors import quote

# Every int fits the 64-bit integers torch and TensorBoard hold it in. torch.manual_seed takes
# 0 to 2**64 - 1 and wraps negatives onto it (-1 is 2**64 - 1); seeds here are 0 to 2**63 - 1,
# which leaves room for seed + rank.
INT64_MAX = SEED_MAX = 2**63 - 1
MAX_THREADS = 4096  # torch.set_num_threads takes a C int; more threads than any machine has
# A rate in [0, 1): every dropout, weight drop, SGD momentum.
Fraction = Annotated[float, Field(ge=0, lt=1)]
MAX_LR = 1e6  # AWD's SGD uses 30; near 1e38 the optimizer's float32 update overflows (a crash)


class _Section(BaseModel):
    # allow_inf_nan=False: no rate, factor or timeout is meaningful as .inf or .nan.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _fits_64_bits(cls, value: Any) -> Any:
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, int) and not -INT64_MAX - 1 <= item <= INT64_MAX:
                raise ValueError(f"{quote(item)} does not fit in a 64-bit integer; give a value up to {INT64_MAX:,}")
        return value
