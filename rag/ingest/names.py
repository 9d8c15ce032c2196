"""Collection names, the one rule: what rag.service.catalog makes and rag.service.keys' keys may name. Imports nothing,
so `rag keys add` checks a name without loading the pipeline."""
from __future__ import annotations

import re

#: The collection served from --docs/--index.
DEFAULT = "default"
#: A collection's name: 1-64 of a-z, 0-9, '_' and '-'.
NAME = re.compile(r"[a-z0-9_-]{1,64}")
#: A key's collections when it reaches every one (an operator's key, and every key made before keys named them).
EVERY = "*"
