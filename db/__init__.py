"""The store: SQLAlchemy 2 schema, sessions, Alembic migrations, repository functions, audit
queries. Imports nothing from doctriage, workers, pipelines, classifier or Celery."""
