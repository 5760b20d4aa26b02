"""QAT with channel-wise distillation: the loss terms and a few real fine-tuning steps."""

import copy

import numpy as np
import pytest
import torch

from yolov6_build.quantize.qat import DistillationLoss, channel_wise_distillation, combined_loss


def test_cwd_is_zero_for_identical_maps_and_positive_otherwise():
    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 5, 6)
    assert channel_wise_distillation(teacher.clone(), teacher).abs() < 1e-6
    assert channel_wise_distillation(teacher + 3.0, teacher).abs() < 1e-5  # a per-channel shift: same softmax
    assert channel_wise_distillation(teacher * 0.5, teacher) > 1e-3
    assert channel_wise_distillation(torch.randn(2, 4, 5, 6), teacher) > 0.1


def test_cwd_temperature_softens_the_distributions():
    torch.manual_seed(1)
    s, t = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    kl = lambda tau: float(channel_wise_distillation(s, t, tau) / tau**2)  # noqa: E731
    assert kl(4.0) < kl(1.0)


@pytest.fixture(scope="module")
def qat_setup(checkpoint, tmp_path_factory):
    """Demo model as teacher, its PTQ copy (max, merged scales) as student, one fixed train batch."""
    from yolov6_build.data import CocoDataset, TrainDataset, collate
    from yolov6_build.model.checkpoint import load_deploy_model
    from yolov6_build.quantize.merge import merge_scales
    from yolov6_build.quantize.ptq import PtqConfig, quantize_ptq
    from yolov6_build.synthetic import write_split

    teacher, info = load_deploy_model(checkpoint)
    hw = tuple(info.input_hw)
    data = TrainDataset(CocoDataset(write_split(tmp_path_factory.mktemp("qat"), "train", 8, seed=3)), hw,
                        augment=False)
    batch = collate([data[i] for i in range(8)])
    student = quantize_ptq(teacher, [batch[0].numpy()], PtqConfig("max"), progress=False)
    merge_scales(student, hw)
    return teacher, student, batch


def test_distillation_loss_is_zero_against_itself_and_positive_against_the_quantized_student(qat_setup):
    from yolov6_build.quantize.qat import _features

    teacher, student, (images, _, _) = qat_setup
    distill = DistillationLoss(("neck", "cls_logits"), 1.0)
    with torch.no_grad():
        _, t = _features(teacher, images)
        _, s = _features(student, images)
    assert float(distill(t, t)) < 1e-6
    assert float(distill(s, t)) > 0


def test_a_few_qat_steps_lower_the_combined_loss_with_scales_kept(qat_setup):
    from yolov6_build.quantize.ptq import quantizers
    from yolov6_build.train.loss import DetectionLoss

    teacher, ptq, batch = qat_setup
    student = copy.deepcopy(ptq).train()
    amax_before = {n: q.amax.clone() for n, q in quantizers(student) if q.is_enabled and q.amax is not None}
    criterion, distill = DetectionLoss(student.detect), DistillationLoss(("neck",), 1.0)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(6):
        loss, task, kd = combined_loss(student, teacher, criterion, distill, batch, kd_weight=1.0)
        assert float(kd.detach()) > 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    for name, quantizer in quantizers(student):
        if name in amax_before:
            np.testing.assert_array_equal(quantizer.amax, amax_before[name])  # tied scales stay tied
