"""Redis, the system of record: connections, keys, Lua scripts, streams, the dev server."""
