"""Real servers on private loopback ports for tests: S3 (moto), Redis with Sentinel, PgBouncer, PostgreSQL."""
