"""The operations console: server-rendered pages under ``/console`` of ``stayler api``.

For the people who run the fleet: the queue, throughput, errors, workers and the leader at a glance;
every conversion with its attempts, metrics and usage; and, for operators, audited cancel, retry and
dispatch pause through the SQL functions. The shell (:mod:`stayler.web`) mounts it in the API's app with
:func:`console.web.mount_console`; docs/operations.md ("The operations console") describes it.
"""
