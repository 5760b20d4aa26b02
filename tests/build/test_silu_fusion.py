"""bench-silu: the head conv's activation forms, as OpenVINO compiles them."""

import json


def test_bench_silu_reports_the_sigmoid_form_fused_and_the_tanh_form_apart(tmp_path):
    """The premise of ``cpu_qdq.silu_as_tanh``: OpenVINO fuses x*sigmoid(x) and its requantization into
    the INT8 conv (nothing runs between the two convs), and leaves h*(1+tanh h) to a kernel of its own."""
    from yolov6_build.reports.silu_fusion import VARIANTS, silu_fusion_report

    report = silu_fusion_report(tmp_path, runs=20)
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == [label for label, *_ in VARIANTS]
    assert all(r["conv_us"] > 0 and r["wall_us"] > 0 for r in rows.values())
    assert rows["INT8 conv + SiLU x*sigmoid(x), requantized (before)"]["between_us"] == 0
    assert rows["INT8 conv + SiLU h*(1+tanh h), requantized (served)"]["between_us"] > 0
    assert json.loads((tmp_path / "silu_fusion.json").read_text())["rows"] == report["rows"]
    assert "| INT8 conv + ReLU, requantized |" in (tmp_path / "silu_fusion.md").read_text()
