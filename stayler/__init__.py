"""Stayler conversion workers: the application shell (settings, logging, services, CLI)."""
