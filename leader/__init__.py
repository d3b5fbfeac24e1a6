"""Dispatch: turns queued jobs in PostgreSQL into Dramatiq messages, and rescues lost jobs.

PostgreSQL is the truth; a message only says "there may be work: claim some". One dispatcher per
fleet is active at a time (a PostgreSQL advisory lock elects it); the others stand by.
"""
