"""Alignment methods: one file per method, each a config dataclass plus a class implementing `Method`."""
