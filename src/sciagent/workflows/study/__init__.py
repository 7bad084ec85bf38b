"""The thermal-stability study: plan, fit, simulate, adapt, report (``sciagent run``)."""
