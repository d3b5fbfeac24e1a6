"""Tests: broker."""
