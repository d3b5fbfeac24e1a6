"""What every test driver shares: worker fleets and the leader as processes (:mod:`.fleet`), rows and
workloads (:mod:`.factories`, :mod:`.workload`), condition-based waits (:mod:`.wait`) and a run's
scratch folder (:mod:`.scratch`).

The e2e tests, the chaos runner and the multihost cluster drive their fleets through these; the
benchmarks (shipped code, ``stayler bench``) drive theirs through the runtime's ``worker.supervisor``,
which :mod:`.fleet` builds on too.
"""
