"""Khma's storage: typed SQLAlchemy 2 models, the session factory, queries, migrations."""
