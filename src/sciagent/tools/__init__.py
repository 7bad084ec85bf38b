"""The tool catalogue: one registry (``registry``), built-in tools as thin adapters over science and
compute calls, one module per family; ``catalogue.builtin_tools`` assembles them."""
