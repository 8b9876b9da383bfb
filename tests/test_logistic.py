"""cellclass.models.logistic: scikit-learn's logistic regression kept as plain arrays."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cellclass.models.logistic import fit_logistic, predict_logistic


@pytest.mark.parametrize("n_present", [2, 3])
def test_probabilities_equal_scikit_learns_on_the_same_inputs(n_present):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, n_present, 60)
    features = rng.normal(size=(60, 4)) + labels[:, None] * [1.0, -0.5, 0.0, 2.0]
    model = fit_logistic(features, labels, n_present, l2=0.01)
    z = (features - features.mean(0)) / features.std(0)
    reference = LogisticRegression(C=1 / (2 * 0.01 * 60), max_iter=1000).fit(z, labels)
    np.testing.assert_allclose(
        predict_logistic(model, features), reference.predict_proba(z), atol=1e-9
    )


def test_a_class_absent_from_training_gets_no_probability_and_bad_input_is_refused():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 2], 20)  # class 1 of 3 never seen
    features = rng.normal(size=(40, 3)) + labels[:, None]
    probs = predict_logistic(fit_logistic(features, labels, 3), features)
    assert probs.shape == (40, 3) and np.allclose(probs[:, 1], 0) and np.allclose(probs.sum(1), 1)
    assert (probs.argmax(1) == labels).mean() > 0.8
    with pytest.raises(ValueError, match="2 or more classes"):
        fit_logistic(features, np.zeros(40, int), 3)
