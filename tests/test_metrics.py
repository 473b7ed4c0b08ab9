import numpy as np
import pytest
import torch

from spl import metrics


def test_hand_computed_scores():
    gt = torch.tensor([[0, 0, 1, 1]] * 4)
    perfect = gt.clone()
    assert metrics.boundary_recall(perfect, gt, tolerance=0) == 1.0
    assert metrics.undersegmentation_error(perfect, gt) == 0.0
    assert metrics.achievable_segmentation_accuracy(perfect, gt) == 1.0
    # one superpixel over everything: leaks half of the image
    one = torch.zeros(4, 4, dtype=torch.long)
    assert metrics.undersegmentation_error(one, gt) == pytest.approx((8 + 8) / 16)
    assert metrics.achievable_segmentation_accuracy(one, gt) == pytest.approx(0.5)
    assert metrics.boundary_recall(one, gt) == 0.0
    # superpixel boundary one column off: missed at tolerance 0, found at 1
    shifted = torch.tensor([[0, 1, 1, 1]] * 4)
    assert metrics.boundary_recall(shifted, gt, tolerance=0) == 0.0
    assert metrics.boundary_recall(shifted, gt, tolerance=1) == 1.0
    # S0 = column 0 (inside G0), S1 = columns 1-3: |S1&G0| = 4, |S1-G0| = 8 -> min 4; S1&G1 -> 4
    assert metrics.undersegmentation_error(shifted, gt) == pytest.approx((0 + 4 + 4) / 16)
    assert metrics.achievable_segmentation_accuracy(shifted, gt) == pytest.approx((4 + 8) / 16)
    assert metrics.number_of_segments(shifted) == 2


def test_batch_numpy_and_ignore():
    gt = np.array([[0, 0, 255, 1]] * 3)
    sp = np.array([[0, 0, 0, 1]] * 3)
    # the ignored column is left out: superpixels are perfect on the rest
    assert metrics.achievable_segmentation_accuracy(sp, gt, ignore_index=255) == 1.0
    assert metrics.undersegmentation_error(sp, gt, ignore_index=255) == 0.0
    batch = metrics.undersegmentation_error(np.stack([sp, sp]), np.stack([gt, gt]))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2,)
    scores = metrics.superpixel_scores(sp, gt, ignore_index=255)
    assert set(scores) == {"boundary_recall", "undersegmentation_error", "achievable_segmentation_accuracy", "segments"}


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        metrics.boundary_recall(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        metrics.undersegmentation_error(torch.zeros(3, 3), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.boundary_recall(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long), -1)


def test_confusion_matrix_and_miou():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    m = metrics.confusion_matrix(pred, gt, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    acc = metrics.ConfusionMatrix(4).update(pred, gt).update(torch.tensor(pred), torch.tensor(gt))
    iou = acc.iou()
    assert iou[:3].tolist() == pytest.approx([0.5, 2 / 3, 1.0]) and np.isnan(iou[3].item())
    assert acc.miou() == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    with pytest.raises(ValueError, match="ground_truth holds a class outside"):
        metrics.confusion_matrix(pred, np.array([[0, 0, 1], [1, 7, 255]]), 3)
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion_matrix(pred[:1], gt, 3)
