"""The database: SQL migrations (``schema/migrations``), the SQLAlchemy mapping and error codes.

See ``schema/README.md`` for the tables, indexes, functions, SQLSTATEs and the job state machine.
"""
