"""Batch jobs as things the agent can act on: submit, follow, hold, cancel, read back (PBS Pro and Slurm).

psij-python submits, follows and cancels (``psij_jobs``); what psij lacks, listing queues, nodes
and jobs (``queues``, ``listing``) and holding jobs (``hold``), is read from the scheduler's own
commands through one seam (``commands.run_command``). ``ledger`` remembers which jobs sciagent
submitted and the requests it wrote, per user and site; ``policy`` decides, from that ledger and the
site's bounds, what sciagent may do next; ``values`` holds the patterns every value sent on must fit.
"""
