"""Config checks, run on the composed config before anything loads; every error names the key.

keys.py         keys no schema has, and Hydra's composition errors as one line (key and where it was set)
values.py       choices, ranges and combinations of keys (check_values: all of them)
environment.py  what a setting needs from the machine: optional packages, an endpoint's key (at run start)
"""

from lora_llava.checks.environment import VARLEN_ATTENTION, check_endpoint_ready, check_levers
from lora_llava.checks.keys import describe_config_error, unknown_key_message
from lora_llava.checks.values import SCORERS, check_config, check_values, uses_endpoint

__all__ = ["SCORERS", "VARLEN_ATTENTION", "check_config", "check_endpoint_ready", "check_levers", "check_values",
           "describe_config_error", "unknown_key_message", "uses_endpoint"]
