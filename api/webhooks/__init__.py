"""Webhooks: Standard Webhooks signing, the URL guard, and the sender that delivers the outbox."""
