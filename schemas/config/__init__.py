"""Typed configuration: one model per component, defaults documented, loaded from YAML.

An unknown key is an error that names the key and the keys allowed at that place.
Each component's models live in their own module; every public name is importable from here.
"""

from schemas.config.base import ConfigError, config_hash
from schemas.config.corpus import DemoConfig, IngestConfig, ShardConfig
from schemas.config.load import load_config, parse_config, read_config_file
from schemas.config.mining import InstructionConfig, MiningConfig
from schemas.config.orchestration import OrchestrationConfig
from schemas.config.run import RunConfig
from schemas.config.supervision import SupervisionConfig
from schemas.config.synthesis import (FACE_TASKS, MAP_TASKS, OBJECT_AND_REPAINT_TASKS, STYLE_AND_CHAIN_TASKS,
                                      SYNTH_TASKS, TEXT_TASKS, ChainConfig, DegradationConfig, FaceConfig,
                                      MapsConfig, MaskFilterConfig, StyleConfig, SynthesisConfig, TextSynthConfig,
                                      VerifyConfig)
from schemas.config.train import TrainConfig

__all__ = [
    "ConfigError", "config_hash", "load_config", "parse_config", "read_config_file",
    "RunConfig", "IngestConfig", "ShardConfig", "DemoConfig", "InstructionConfig", "MiningConfig",
    "OrchestrationConfig", "SupervisionConfig", "TrainConfig",
    "SynthesisConfig", "MaskFilterConfig", "VerifyConfig", "FaceConfig", "TextSynthConfig", "MapsConfig",
    "DegradationConfig", "StyleConfig", "ChainConfig",
    "SYNTH_TASKS", "OBJECT_AND_REPAINT_TASKS", "TEXT_TASKS", "MAP_TASKS", "STYLE_AND_CHAIN_TASKS", "FACE_TASKS",
]
