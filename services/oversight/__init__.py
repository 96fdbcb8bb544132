"""Oversight: the commission's report, CAD/911/shooting imports, audit log, retention, roles."""
