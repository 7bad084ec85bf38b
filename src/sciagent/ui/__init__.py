"""``sciagent ui``: the workspace journal as a live web page, served by sciagent itself.

The journal is the only source of truth: the page shows what the terminal commands would
(``runs``, ``show``, ``approve``) and acts only by adding the journal events they add. Nothing is
loaded from a CDN, so the page works offline, on a compute node and through ``ssh -L``.
"""
