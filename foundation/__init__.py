"""The bottom layer: what every other layer shares, importing nothing of ours.

- :mod:`foundation.errors`: the error tree (each class with its HTTP status).
- :mod:`foundation.environment`: backend URLs and paths from ``FEATURESTORE_*`` variables.
- :mod:`foundation.migrations`: Alembic upgrades for our tables next to the Feast registry.

``online_store`` and ``offline_store`` sit on it and never import each other or
``service``; ``service`` sits on top of all three (import-linter checks it in ``make lint``).
"""
