import numpy as np

from voxelhub.segment.synthetic import ENHANCING, ct_case, mr_brain_case


def test_ct_cases_are_deterministic_and_in_hounsfield_units() -> None:
    a, b = ct_case(shape=(8, 24, 24), seed=4), ct_case(shape=(8, 24, 24), seed=4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, ct_case(shape=(8, 24, 24), seed=5).labels)
    assert a.image.min() >= -1024 and a.labels.any()
    assert abs(float(a.image[a.labels == 1].mean()) - 110) < 15  # the spleen


def test_mr_brain_cases_have_four_channels_and_a_nested_tumour() -> None:
    case = mr_brain_case(shape=(16, 32, 32), seed=0)
    assert list(case.channels) == ["t1c", "t1", "t2", "flair"]
    assert set(np.unique(case.labels)) == {0, 1, 2, 4}
    enhancing = case.labels == ENHANCING
    assert case.channels["t1c"][enhancing].mean() > 2 * case.channels["t1"][enhancing].mean()
