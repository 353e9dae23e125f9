"""The iii engine: worker registry, invocation routing, built-ins and the channel broker."""

from __future__ import annotations

from ._config import EngineConfig as EngineConfig
from ._engine import Engine as Engine
from ._engine import LocalDialer as LocalDialer
from ._serve import open_engine as open_engine
from ._serve import serve_engine as serve_engine
from ._statistics import EngineStatistics as EngineStatistics
