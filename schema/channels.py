"""The NOTIFY channels the database's triggers send on: the one place their names are written in Python.

A test (``tests/schema/test_channels.py``) checks that these are exactly the channels the migrated
schema's functions ``pg_notify`` on, so a trigger and its listener cannot drift apart.
"""

from __future__ import annotations

#: A job became ready (inserted, or due again): wakes the leader's dispatch duty. Payload empty.
JOBS = "stayler_jobs"
#: A conversion became terminal: wakes ``?wait=`` requests and ``producer.wait``. Payload: its id.
CONVERSION_DONE = "stayler_conversion_done"
#: A webhook event was recorded: wakes the webhook sender. Payload empty.
WEBHOOKS = "stayler_webhooks"

ALL = (JOBS, CONVERSION_DONE, WEBHOOKS)
