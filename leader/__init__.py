"""The fleet's leader: one process at a time, elected by a lease, runs the duties nobody else may.

PostgreSQL is the truth; a message only says "there may be work: claim some". The leader turns
queued jobs into such messages, rescues the jobs of dead workers, deletes the files of attempts
that will never complete and publishes the queue gauges. See docs/architecture.md.
"""
