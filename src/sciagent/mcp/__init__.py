"""MCP both ways: the catalogue served to MCP clients (``server``, ``http``, ``background``), and external
MCP servers' tools added to a session's catalogue (``client``). Nothing here imports ``workflows``: what
needs the whole catalogue and the journal assembles these pieces there."""
