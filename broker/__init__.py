"""The Dramatiq Redis broker and the one message of the system (\"claim work\")."""
