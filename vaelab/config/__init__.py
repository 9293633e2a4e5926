"""Configuration: typed schema (schema.py) and composition from configs/ (compose.py)."""

from vaelab.config.compose import CommandLine, compose, compose_saved, load_config, parse_command_line, to_object
from vaelab.config.schema import FitConfig

__all__ = ["CommandLine", "FitConfig", "compose", "compose_saved", "load_config", "parse_command_line", "to_object"]
