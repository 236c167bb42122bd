"""pgqueue's FastAPI example: an async endpoint writes an order and enqueues its confirmation
in one transaction of an SQLAlchemy AsyncSession; ``pgqueue work`` confirms it."""
