"""Orchestration that drives the store (layer 4): Airflow DAGs, a Kubeflow pipeline, MLflow lineage.

- ``config``, ``materialize``, ``training``: the steps themselves, on the project alone;
- ``ride_ranking``: the example model (scikit-learn); ``lineage``: MLflow;
- ``airflow_support`` and ``airflow_dags/``: Airflow 3; ``kubeflow/``: kfp v2.

Airflow, kfp, MLflow and scikit-learn live in their own environment, ``.venv-pipelines``
(``make pipelines-env``, pinned in ``pipelines/requirements.txt``), never in the service's
``.venv``: they pin packages the service must stay free to move.
"""
