"""Test support shared by test areas (loopback receivers, fakes of external services)."""
