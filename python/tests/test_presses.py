"""Press classes generated from the C++ registry, with kvpress's names and arguments."""

import inspect
import pydoc

import pytest

import kvsqueeze
from kvsqueeze import _core

KVPRESS_CLASSES = [
    "KnormPress", "SnapKVPress", "ExpectedAttentionPress", "TOVAPress", "StreamingLLMPress", "ObservedAttentionPress",
    "KeyDiffPress", "LagKVPress", "AdaKVPress", "CriticalKVPress", "CriticalAdaKVPress", "ComposedPress",
    "PerLayerCompressionPress", "KeyRerotationPress", "ChunkPress", "ChunkKVPress", "BlockPress", "ThinKPress",
    "FinchPress", "KVzipPress", "DuoAttentionPress", "PyramidKVPress", "SimLayerKVPress", "QFilterPress",
    "DecodingPress", "PrefillDecodingPress", "CompressionRatioDecodingPress", "RandomPress", "HeadKVPress",
    "DiliLazyKVPress", "PyramidMergePress", "MergingPress", "CAMPress",
]


@pytest.mark.parametrize("name", KVPRESS_CLASSES)
def test_kvpress_class_names_exist(name):
    assert issubclass(getattr(kvsqueeze, name), kvsqueeze.BasePress)


def test_every_registry_press_has_a_class():
    names = [p["name"] for p in _core.list_presses()]
    assert len(names) >= 35
    for name in names:
        cls = kvsqueeze.press_class(name)
        assert cls._registry == name and hasattr(kvsqueeze, cls.__name__)


def test_kvpress_constructor_arguments():
    assert list(inspect.signature(kvsqueeze.SnapKVPress).parameters) == ["compression_ratio", "window_size", "kernel_size"]
    assert list(inspect.signature(kvsqueeze.AdaKVPress).parameters)[:2] == ["press", "alpha_safeguard"]
    assert list(inspect.signature(kvsqueeze.ComposedPress).parameters) == ["presses"]
    assert list(inspect.signature(kvsqueeze.ThinKPress).parameters) == ["key_channel_compression_ratio", "window_size"]
    assert "compression_ratios" in inspect.signature(kvsqueeze.PerLayerCompressionPress).parameters
    assert list(inspect.signature(kvsqueeze.CriticalKVPress).parameters) == ["press", "epsilon", "first_stage_ratio"]
    assert "window_size" not in inspect.signature(kvsqueeze.FinchPress).parameters  # set from the question
    press = kvsqueeze.SnapKVPress(0.3, 16, 3)
    assert (press.compression_ratio, press.window_size, press.kernel_size) == (0.3, 16, 3)


def test_help_lists_options_and_defaults():
    text = pydoc.render_doc(kvsqueeze.SnapKVPress, renderer=pydoc.plaintext)
    assert "SnapKVPress(compression_ratio=0.0, window_size=64, kernel_size=5)" in text
    assert "window_size : int, default 64" in text and "kernel_size : int, default 5" in text
    text = pydoc.render_doc(kvsqueeze.AdaKVPress, renderer=pydoc.plaintext)
    assert "alpha_safeguard : float, default 0.2" in text


def test_presses_become_expressions_and_ratios():
    assert kvsqueeze.SnapKVPress(0.5).plan() == {"press": "snapkv", "ratio": 0.5}
    assert kvsqueeze.SnapKVPress(0.25, window_size=8).plan() == {"press": "snapkv(window_size=8)", "ratio": 0.25}
    ada = kvsqueeze.AdaKVPress(kvsqueeze.ExpectedAttentionPress(compression_ratio=0.4, epsilon=0.01), alpha_safeguard=0.3)
    assert ada.plan() == {"press": "adakv(expected_attention(epsilon=0.01), alpha_safeguard=0.3)", "ratio": 0.4}
    assert ada.compression_ratio == 0.4
    ada.compression_ratio = 0.6  # kvpress's wrappers set their press's ratio
    assert ada.press.compression_ratio == 0.6
    composed = kvsqueeze.ComposedPress([kvsqueeze.SnapKVPress(0.2), kvsqueeze.KnormPress(0.5)])
    assert composed.plan()["press"] == "composed(snapkv, knorm, ratios=0.2:0.5)"
    assert composed.plan()["ratio"] == pytest.approx(0.6)
    per_layer = kvsqueeze.PerLayerCompressionPress(kvsqueeze.KnormPress(), compression_ratios=[0.1, 0.5])
    assert per_layer.plan()["press"] == "per_layer(knorm, ratios=0.1:0.5)"
    decoding = kvsqueeze.DecodingPress(kvsqueeze.KnormPress(), compression_interval=8, target_size=32)
    assert decoding.plan() == {"press": "none", "ratio": 0.0, "decode_press": "knorm", "decode_interval": 8, "decode_target": 32}
    for press in (ada, composed, per_layer, decoding):
        press.validate()


def test_adasnapkv_attributes_as_in_the_fork():
    press = kvsqueeze.AdaSnapKVPress()
    press.compression_ratio = 0.5
    press.window_size = 2
    assert press.plan() == {"press": "adakv(snapkv(window_size=2), rule=original)", "ratio": 0.5}


@pytest.mark.parametrize("make, plan", [
    (lambda: kvsqueeze.SnapKVPress(compression_ratio=1.5), {"press": "snapkv", "ratio": 1.5}),
    (lambda: kvsqueeze.SnapKVPress(0.5, window_size=0), {"press": "snapkv(window_size=0)", "ratio": 0.5}),
    (lambda: kvsqueeze.LagKVPress(0.5, mode="nope"), {"press": "lagkv(mode=nope)", "ratio": 0.5}),
])
def test_bad_values_raise_the_engines_message(make, plan):
    with pytest.raises(ValueError) as raised:
        make()
    with pytest.raises(ValueError) as direct:
        _core.validate_plan(**plan)
    assert str(raised.value) == str(direct.value)
    assert "\n" not in str(raised.value)


def test_bad_expression_and_unknown_arguments():
    with pytest.raises(ValueError, match="snapkvv"):
        kvsqueeze.validate_plan(press="snapkvv", ratio=0.5)
    with pytest.raises(ValueError, match="bad press expression"):
        kvsqueeze.validate_plan(press="adakv(snapkv", ratio=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'windw_size'"):
        kvsqueeze.SnapKVPress(0.5, windw_size=8)
    with pytest.raises(TypeError, match="missing required argument 'press'"):
        kvsqueeze.AdaKVPress()
