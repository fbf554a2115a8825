"""The profile breakdown (`benchmarks.profile`): own times of nested events, operation
kinds from the optimised HLO, and a traced forward pass of the tiny network."""

import json

import pytest

from benchmarks import profile

HLO = "\n".join([
    "ENTRY %main {",
    '  %ynn_fusion.7 = f32[1,16,24,32]{3,2,1,0} fusion(%a, %b), kind=kCustom, calls=%c, '
    'metadata={op_name="jit(f)/IFAN/up3/conv_general_dilated"}',
    "  %multiply_select_fusion.1 = f32[1,64,96,8]{3,2,1,0} fusion(%d), kind=kLoop, calls=%e, "
    'metadata={op_name="jit(f)/IFAN/up1/jit(_where)/select_n"}',
    "  %copy.3 = f32[8,64]{0,1} copy(%f)",
    "  ROOT %while.2 = (f32[4]) while(%g), condition=%h, body=%i, "
    'metadata={op_name="jit(f)/IFAN/_adapt/while"}',
    "  %cc = (f32[1,8,8,4]{3,2,1,0}, u8[0]{0}) custom-call(%j, %k), "
    'custom_call_target="__cudnn$convBiasActivationForward"',
    "}"])


def test_nested_events_count_once_in_the_innermost():
    events = [("while", 0, 100), ("conv", 10, 30), ("add", 50, 20), ("conv", 120, 5)]
    own = sorted(profile._self_times(events))
    assert own == [("add", 20), ("conv", 5), ("conv", 30), ("while", 50)]


def test_operations_get_their_kind_from_what_they_compute():
    kinds = profile.hlo_kinds(HLO)
    assert kinds == {"ynn_fusion.7": "convolution", "multiply_select_fusion.1": "elementwise fusion",
                     "copy.3": "transpose/copy", "while.2": "loop overhead", "cc": "convolution"}
    assert profile.kind_of("aten::mkldnn_convolution") == "convolution"
    assert profile.kind_of("aten::leaky_relu_") == "elementwise fusion"
    assert profile.kind_of("aten::replication_pad2d") == "padding"


def test_breakdown_shares_add_up_per_call():
    result = profile.breakdown({"conv_general_dilated.1": 3.0, "loop_add_fusion": 1.0}, calls=2)
    assert result["total_s"] == pytest.approx(2.0)
    assert result["kinds"]["convolution"] == {"s": 1.5, "share": 0.75}
    assert [op["op"] for op in result["top_ops"]] == ["conv_general_dilated.1", "loop_add_fusion"]


@pytest.mark.slow
def test_a_traced_forward_pass_is_mostly_convolution(tmp_path):
    out = profile.main(["--tiny", "--size=96x64", "--calls=2", f"--json={tmp_path / 'p.json'}"])
    ours = json.loads((tmp_path / "p.json").read_text())["ours"]
    assert ours == json.loads(json.dumps(out["ours"]))
    assert ours["platform"] == "cpu" and ours["total_s"] > 0
    assert sum(v["share"] for v in ours["kinds"].values()) == pytest.approx(1.0)
    assert max(ours["kinds"], key=lambda k: ours["kinds"][k]["s"]) == "convolution"
    assert out["ours_run"]["wall_s_per_call"] > 0
