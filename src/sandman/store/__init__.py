"""The database: what should exist. Models, repositories and migrations."""
