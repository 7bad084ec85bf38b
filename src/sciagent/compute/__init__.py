"""Where simulations run: one small Executor protocol, one module per engine (local processes, ...)."""
