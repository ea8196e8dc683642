"""The config: one typed schema (every default lives there), read from YAML with `--set`
overrides, every problem reported together with its dotted key.

    schema.py        the model and train sections, Config, load_config / dump_config
    data_section.py  the data section (which corpus, in which unit, where)
    section.py       the base every section derives from (unknown keys, 64-bit integers)
    reading.py       reading a YAML file safely, and applying `--set key=value`
    problems.py      one line per problem pydantic finds, with the closest valid key
    durations.py     durations as people write them: 15m, 90s, 1h30m

Precedence, lowest to highest: schema defaults < YAML file < `--set key=value` overrides.
"""

from charlm.config.data_section import DataConfig
from charlm.config.schema import (
    AWD_MODEL_KEYS,
    CALIBRATION_END,
    CALIBRATION_SKIP,
    DEVICES,
    INT64_MAX,
    SEED_MAX,
    Config,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    dump_config,
    load_config,
)

__all__ = [
    "AWD_MODEL_KEYS",
    "CALIBRATION_END",
    "CALIBRATION_SKIP",
    "DEVICES",
    "INT64_MAX",
    "SEED_MAX",
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
]
