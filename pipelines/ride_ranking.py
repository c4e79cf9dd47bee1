"""The example repo's ride-ranking model: will a driver accept this trip?

Trained on ``ride_ranking_v1`` training sets (trips + driver, rider and pair features) and
judged on the time-based split (:func:`offline_store.split.time_split`): the test part is
strictly later than every training row, as in production. The baseline predicts the
training acceptance rate for every trip; a model worth shipping must beat it clearly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from foundation.errors import InvalidRequestError
from offline_store.split import Split, time_split

LABEL = "accepted"
NUMERIC = [
    "conv_rate",
    "acc_rate",
    "avg_rating",
    "avg_passenger_rating",
    "trips_together",
    "avg_tip",
    "last_rating",
    "estimated_fare",
    "distance_km",
    "duration_min",
]
CATEGORICAL = ["membership_tier"]
FRACTIONS = (0.7, 0.1, 0.2)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Test-set scores of the model and of the constant baseline."""

    rows: int
    auc: float
    baseline_auc: float
    log_loss: float
    baseline_log_loss: float

    def to_dict(self) -> dict[str, float]:
        """The scores as MLflow / KFP metrics."""
        return {k: float(v) for k, v in asdict(self).items()}


def split(frame: pd.DataFrame) -> Split[pd.DataFrame]:
    """The time-based split every step uses (same cut-offs for train and evaluate)."""
    return time_split(frame, fractions=FRACTIONS)


def _check(frame: pd.DataFrame) -> None:
    missing = sorted(set(NUMERIC + CATEGORICAL + [LABEL]) - set(frame.columns))
    if missing:
        raise InvalidRequestError(
            f"training set lacks columns {missing}; build it from the ride_ranking_v1 "
            "feature service with the trips (labels) as entity rows",
        )


def train(frame: pd.DataFrame, *, seed: int = 0) -> Pipeline:
    """Fit the model on the training part of the time split.

    Gradient-boosted trees take missing feature values as they are (a first ride has no
    pair history), so nothing is imputed.
    """
    _check(frame)
    part = split(frame).train
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        (
                            "tier",
                            OrdinalEncoder(
                                handle_unknown="use_encoded_value",
                                unknown_value=np.nan,
                                encoded_missing_value=np.nan,
                            ),
                            CATEGORICAL,
                        ),
                        ("numeric", "passthrough", NUMERIC),
                    ]
                ),
            ),
            (
                "trees",
                HistGradientBoostingClassifier(
                    max_iter=150, learning_rate=0.05, max_leaf_nodes=15, random_state=seed
                ),
            ),
        ]
    )
    model.fit(part[CATEGORICAL + NUMERIC], part[LABEL].astype(bool))
    return model


def evaluate(model: Any, frame: pd.DataFrame) -> Evaluation:
    """Score the model and the constant baseline on the test part of the time split."""
    _check(frame)
    parts = split(frame)
    test = parts.test
    truth = test[LABEL].astype(bool).to_numpy()
    if len(set(truth.tolist())) < 2:
        raise InvalidRequestError("the test split holds one class only; use more trips")
    scores = model.predict_proba(test[CATEGORICAL + NUMERIC])[:, 1]
    prior = float(parts.train[LABEL].astype(bool).mean())
    constant = np.full(len(test), prior)
    return Evaluation(
        rows=len(test),
        auc=float(roc_auc_score(truth, scores)),
        baseline_auc=float(roc_auc_score(truth, constant)),
        log_loss=float(log_loss(truth, scores, labels=[False, True])),
        baseline_log_loss=float(log_loss(truth, constant, labels=[False, True])),
    )
