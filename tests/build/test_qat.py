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


def test_quantize_stage_with_qat_keeps_every_scale_and_tunes_the_weights(checkpoint, quantized, tmp_path):
    """build-repo --qat: the stage's Q/DQ graph carries the PTQ stage's scales (same calibration) and
    fine-tuned weights."""
    import onnx
    from onnx import numpy_helper

    from yolov6_build.quantize.qat import QatConfig
    from yolov6_build.quantize.stage import QuantizeStageConfig, run_quantize
    from yolov6_build.synthetic import write_split

    labelled = write_split(tmp_path / "data", "train", 8, seed=3)
    calib = quantized.parent / "data" / "calib"  # the `quantized` fixture's calibration images
    cfg = QuantizeStageConfig(calib_images=32, qat=QatConfig(str(labelled), iterations=2, batch_size=4))
    report = run_quantize(checkpoint, calib, tmp_path / "graphs", cfg, progress=False)
    assert [h["iteration"] for h in report["qat_history"]][-1] == 2

    def tensors(path):
        """({quantizer: scale}, {weight name: weights}); the exporter writes scales as Constant nodes."""
        graph = onnx.load(str(path)).graph
        constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
        scales = {n.name: constants[n.input[1]] for n in graph.node if n.op_type == "QuantizeLinear"}
        return scales, {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith(".weight")}

    ptq_scales, ptq_weights = tensors(quantized / "detector_qdq.onnx")
    qat_scales, qat_weights = tensors(tmp_path / "graphs" / "detector_qdq.onnx")
    assert ptq_scales.keys() == qat_scales.keys() and len(ptq_scales) > 50
    assert all(np.array_equal(ptq_scales[k], qat_scales[k]) for k in ptq_scales)
    assert ptq_weights.keys() == qat_weights.keys()
    assert any(not np.array_equal(ptq_weights[k], qat_weights[k]) for k in ptq_weights)


def test_qat_refuses_images_labelled_with_other_classes(qat_setup, tmp_path):
    import json

    from yolov6_build.errors import ConfigError
    from yolov6_build.quantize.qat import QatConfig, train_qat
    from yolov6_build.synthetic import write_split

    teacher, student, _ = qat_setup
    labelled = write_split(tmp_path, "train", 2, seed=3)
    data = json.loads(labelled.read_text())
    data["categories"] = data["categories"][:3]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in {c["id"] for c in data["categories"]}]
    labelled.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="labelled with the model's classes"):
        train_qat(copy.deepcopy(student), teacher, QatConfig(str(labelled), iterations=1), (320, 320), progress=False)
