"""One batch job: the model server, the run and the walltime, owned by one supervisor (``sciagent job``)."""
