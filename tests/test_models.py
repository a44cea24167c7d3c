"""Model folders, content hashes, span loading, and span math for every family against the whole model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from inferchain.models.batched import decode_batch
from inferchain.models.family import UnknownFamilyError, family_for
from inferchain.models.folder import MANIFEST, ModelFolder, ModelFolderError
from inferchain.models.int8 import Int8Linear
from inferchain.models.prepare import save_model_folder
from inferchain.models.span import ModelHead, SpanError, SpanModel

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=300,
    max_position_embeddings=256,
)


def tiny_folder(tmp_path: Path, family: str, **config: object) -> tuple[Path, torch.nn.Module]:
    """A tiny random model of `family` saved as a model folder, and its transformers model read back. `config`
    overrides the family's test settings (by default Mistral slides a window everywhere, Qwen2 on layers 3..)."""
    torch.manual_seed(0)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**(TINY | {"tie_word_embeddings": True} | config)))
    elif family == "mistral":
        model = MistralForCausalLM(MistralConfig(**(TINY | {"sliding_window": 5} | config)))
    else:
        qwen = {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 3}
        model = Qwen2ForCausalLM(Qwen2Config(**(TINY | qwen | config)))
    model.eval()
    folder = tmp_path / family
    save_model_folder(model, None, folder, f"tiny-{family}")
    reference = type(model).from_pretrained(str(folder), dtype=torch.float32).eval()
    return folder, reference


def run_spans(folder: Path, cuts: list[int], prompt: list[int], steps: int) -> tuple[torch.Tensor, list[int]]:
    head = ModelHead(folder)
    spans = [SpanModel(folder, a, b) for a, b in zip(cuts, cuts[1:], strict=False)]
    caches = [s.new_cache() for s in spans]
    logits_seen, ids, pos = [], list(prompt), 0
    h = head.embed(ids)
    for _ in range(steps):
        for s, c in zip(spans, caches, strict=True):
            h = s.forward(h, pos, c)
        pos += h.shape[1]
        logits = head.logits(h)
        logits_seen.append(logits)
        ids.append(int(logits.argmax()))
        h = head.embed([ids[-1]])
    return torch.stack(logits_seen), ids[len(prompt) :]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_three_spans_equal_the_whole_model(tmp_path, family):
    folder, reference = tiny_folder(tmp_path, family)
    prompt = [5, 17, 42, 9, 100, 3, 77]
    logits, generated = run_spans(folder, [0, 2, 4, 6], prompt, steps=8)
    with torch.inference_mode():
        expected = reference.generate(
            torch.tensor([prompt]),
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    assert generated == expected.sequences[0, len(prompt) :].tolist()
    ref_logits = torch.cat(expected.logits)
    assert (logits - ref_logits).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    "family, config",
    [
        ("llama", {}),
        ("llama", {"attention_bias": True, "mlp_bias": True}),
        ("mistral", {"sliding_window": None}),
        ("qwen2", {"use_sliding_window": False}),  # q/k/v biases
    ],
)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("kernel", ["torch", "onednn"])  # onednn: batches on packed weight copies
def test_lean_decode_equals_the_stock_layers(tmp_path, monkeypatch, family, config, precision, kernel):
    """models/decode.py: one-token steps through the fused projections equal the stock transformers layers, alone
    and batched over sessions of ragged lengths, fp32 and int8, batches on the shared or on packed weights, caches
    written in place (models/cache.py); the fused weights are the stock ones (shared)."""
    from inferchain.models import kernels

    if kernel == "onednn" and not kernels.onednn_available():
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setenv("INFERCHAIN_LINEAR_KERNEL", kernel)
    folder, _ = tiny_folder(tmp_path, family, **config)
    lean, stock = (
        SpanModel(folder, 0, 6, precision=precision),
        SpanModel(folder, 0, 6, precision=precision, lean_decode=False),
    )
    assert lean.runs_lean(0, 6) and not stock.runs_lean(0, 6)
    layer = lean._decode[0]
    # packed copies only with oneDNN fixed, and only of fp32 weights (int8 keeps v_proj and down_proj fp32)
    assert layer.batch_down.packed == (kernel == "onednn")
    assert layer.batch_gate_up.packed == (kernel == "onednn" and precision == "fp32")
    fused = lean._decode[0].qkv if precision == "fp32" else lean._decode[0].qk  # int8 keeps v_proj fp32
    q_proj = lean.layers[0].self_attn.q_proj
    shared = q_proj.weight if precision == "fp32" else q_proj.qweight
    assert (
        shared.untyped_storage().data_ptr()
        == (fused.weight if precision == "fp32" else fused.qweight).untyped_storage().data_ptr()
    )
    gen = torch.Generator().manual_seed(1)
    lengths = [4, 9, 2]
    caches = {id(lean): [lean.new_cache(32) for _ in lengths], id(stock): [stock.new_cache() for _ in lengths]}
    for i, n in enumerate(lengths):
        prompt = torch.randn(1, n, 64, generator=gen)
        for span in (lean, stock):
            span.forward(prompt, 0, caches[id(span)][i])
    positions = list(lengths)
    for _ in range(4):
        steps = [torch.randn(1, 1, 64, generator=gen) for _ in lengths]
        alone = [lean.forward(h, p, c) for h, p, c in zip(steps, positions, caches[id(lean)], strict=True)]
        expected = [stock.forward(h, p, c) for h, p, c in zip(steps, positions, caches[id(stock)], strict=True)]
        for a, e in zip(alone, expected, strict=True):
            assert ((a - e).norm() / e.norm()).item() < 1e-5
        positions = [p + 1 for p in positions]
        steps = [torch.randn(1, 1, 64, generator=gen) for _ in lengths]
        together = decode_batch(lean, steps, positions, caches[id(lean)], 0, 6)
        expected = decode_batch(stock, steps, positions, caches[id(stock)], 0, 6)
        for a, e in zip(together, expected, strict=True):
            assert ((a - e).norm() / e.norm()).item() < 1e-5
        positions = [p + 1 for p in positions]
    for span in (lean, stock):
        assert [c.get_seq_length(0) for c in caches[id(span)]] == [n + 8 for n in lengths]


def test_session_cache_writes_in_place_and_equals_the_growing_one(tmp_path):
    """models/cache.py: a session's cache reserved for its length takes each token in place (its keys stay views
    of one buffer) and gives what transformers' growing cache gives; past its capacity, or once its tensors were
    replaced (a crop), it concatenates instead, still equal."""
    from inferchain.models.cache import ReservedLayer

    folder, _ = tiny_folder(tmp_path, "llama")
    span = SpanModel(folder, 0, 6)
    reserved, growing = span.new_cache(10), span.new_cache()
    assert all(isinstance(layer, ReservedLayer) for layer in reserved.layers)
    assert not any(isinstance(layer, ReservedLayer) for layer in growing.layers)
    gen = torch.Generator().manual_seed(3)

    def step(h: torch.Tensor, pos: int) -> None:
        a, b = span.forward(h, pos, reserved), span.forward(h, pos, growing)
        assert ((a - b).norm() / b.norm()).item() < 1e-6
        for r, g in zip(reserved.layers, growing.layers, strict=True):
            assert torch.equal(r.keys, g.keys) and torch.equal(r.values, g.values)

    step(torch.randn(1, 4, 64, generator=gen), 0)  # the prompt, through the stock layers
    buffer = reserved.layers[2]._buffers[0]
    for pos in range(4, 10):  # up to the capacity: in place
        step(torch.randn(1, 1, 64, generator=gen), pos)
        assert reserved.layers[2].keys.data_ptr() == buffer.data_ptr()
    step(torch.randn(1, 1, 64, generator=gen), 10)  # one more than reserved: concatenated, still right
    assert reserved.layers[2].keys.data_ptr() != buffer.data_ptr()
    assert reserved.get_seq_length(2) == 11

    reserved, growing = span.new_cache(10), span.new_cache()
    step(torch.randn(1, 3, 64, generator=gen), 0)
    for cache in (reserved, growing):
        cache.crop(-1)  # transformers replaces the layers' tensors (views): the reserved layer goes on right
    for pos in range(2, 5):  # (the last prompt token dropped)
        step(torch.randn(1, 1, 64, generator=gen), pos)
    assert reserved.get_seq_length(0) == 5


def test_sub_span_of_a_loaded_span(tmp_path):
    folder, _ = tiny_folder(tmp_path, "llama")
    whole = SpanModel(folder, 0, 6)
    head = ModelHead(folder)
    h = head.embed([1, 2, 3])
    a, b = SpanModel(folder, 0, 3), SpanModel(folder, 3, 6)
    expected = b.forward(a.forward(h, 0, a.new_cache()), 0, b.new_cache())
    cache1, cache2 = whole.new_cache(), whole.new_cache()
    got = whole.forward(whole.forward(h, 0, cache1, 0, 3), 0, cache2, 3, 6)
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(SpanError):
        whole.forward(h, 0, whole.new_cache(), 4, 8)


def test_model_id_is_a_content_hash(tmp_path):
    folder, _ = tiny_folder(tmp_path, "llama")
    manifest = ModelFolder(folder).manifest()
    assert manifest.model_id.startswith("sha256:") and manifest.num_layers == 6
    # Same weights and config, written again: same id.
    again, _ = tiny_folder(tmp_path / "again", "llama")
    assert ModelFolder(again).manifest().model_id == manifest.model_id
    # A changed config changes the id the manifest claims: the folder is refused.
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match="does not match"):
        ModelFolder(folder).manifest()


def test_altered_weights_are_refused_when_their_span_loads(tmp_path):
    folder, _ = tiny_folder(tmp_path, "llama")
    manifest = json.loads((folder / MANIFEST).read_text())
    # Claim a different hash for a layer-4 tensor: a node loading layers 3:6 must refuse; 0:3 is unaffected.
    key = next(k for k in manifest["tensors"] if k.startswith("model.layers.4."))
    raw = (folder / "model.safetensors").read_bytes()
    from safetensors.torch import load, save

    tensors = load(raw)
    tensors[key] = tensors[key] + 1.0
    (folder / "model.safetensors").write_bytes(save(tensors))
    SpanModel(folder, 0, 3)
    with pytest.raises(ModelFolderError, match=key):
        SpanModel(folder, 3, 6)


def test_span_memory_grows_with_the_span(smollm2):
    def param_bytes(span: SpanModel) -> int:
        return sum(p.numel() * p.element_size() for p in span.layers.parameters())

    ten, thirty = SpanModel(smollm2, 0, 10), SpanModel(smollm2, 0, 30)
    assert param_bytes(thirty) == 3 * param_bytes(ten)
    # A span holds no embeddings or head: those are the client's.
    names = {n for n, _ in ten.layers.named_parameters()}
    assert not any("embed" in n or "lm_head" in n for n in names)


def test_bad_spans_and_folders(tmp_path, smollm2):
    with pytest.raises(SpanError):
        SpanModel(smollm2, 20, 31)
    with pytest.raises(SpanError):
        SpanModel(smollm2, 5, 5)
    with pytest.raises(ModelFolderError, match="config.json is missing"):
        ModelFolder(tmp_path).config_dict()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelFolderError, match="model prepare"):
        ModelFolder(tmp_path).manifest()
    with pytest.raises(UnknownFamilyError, match="gpt2"):
        family_for("gpt2")


def test_int8_weights_are_quantized_and_close_per_layer(smollm2):
    """int8 spans really compute with int8 weights (but the linears kept in fp32 for quality); one layer stays
    within a few percent of fp32. (Quality over the whole model, top-1 agreement on a fixed text, is measured by
    bench/node.py.)"""
    fp32, int8 = SpanModel(smollm2, 0, 1), SpanModel(smollm2, 0, 1, precision="int8")
    assert int8.precision == "int8"
    layer = int8.layers[0]
    assert isinstance(layer.mlp.gate_proj, Int8Linear) and layer.mlp.gate_proj.qweight.dtype == torch.int8
    assert isinstance(layer.self_attn.q_proj, Int8Linear)
    kept = [layer.mlp.down_proj, layer.self_attn.v_proj]
    assert all(not isinstance(k, Int8Linear) and k.weight.dtype == torch.float32 for k in kept)
    h = torch.randn(1, 8, 576, generator=torch.Generator().manual_seed(0))
    a, b = fp32.forward(h, 0, fp32.new_cache()), int8.forward(h, 0, int8.new_cache())
    relative = ((a - b).norm() / a.norm()).item()
    assert 0 < relative < 0.05
    with pytest.raises(SpanError, match="precision"):
        SpanModel(smollm2, 0, 1, precision="int4")  # type: ignore[arg-type]


def test_native_int8_kernel_is_exact_and_gives_a_row_the_same_bits_alone_or_batched(int8_kernel_env):
    """models/int8_kernel.cpp: y = (x @ q.T) * scale to fp32 rounding, for shapes that are not whole blocks (rows not
    a multiple of 4, columns not of 8); each row's output is bit for bit the same alone, batched or on two threads.
    Int8Linear runs one row on it and several on torch's kernel; `torch` never builds it; a bad value is refused."""
    from inferchain.models import int8

    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("the native int8 kernel needs AVX2")
    int8_kernel_env.setenv("INFERCHAIN_INT8_KERNEL", "native")  # must build here: a failed build fails the test
    op = int8.native_kernel()
    assert op is not None
    gen = torch.Generator().manual_seed(5)
    for out_features, in_features in ((771, 68), (64, 64), (3072, 576)):
        q = torch.randint(-127, 128, (out_features, in_features), dtype=torch.int8, generator=gen)
        scale = torch.rand(out_features, generator=gen) / 100
        x = torch.randn(3, in_features, generator=gen)
        y = op(x, q, scale)
        exact = (x.double() @ q.double().T) * scale.double()
        assert ((y.double() - exact).abs().max() / exact.abs().max()).item() < 1e-5
        alone = torch.cat([op(x[i : i + 1], q, scale) for i in range(3)])
        assert torch.equal(alone, y)
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            assert torch.equal(op(x, q, scale), y)
        finally:
            torch.set_num_threads(before)
    linear = torch.nn.Linear(64, 40)
    module = Int8Linear(linear)
    x = torch.randn(3, 64, generator=gen)
    with torch.inference_mode():
        one, three = module(x[:1]), module(x)
    assert torch.equal(one, op(x[:1], module.qweight, module.scale32) + linear.bias)
    torch_kernel = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), module.qweight, module.scale).float()
    assert torch.equal(three, torch_kernel + linear.bias)
    int8.native_kernel.cache_clear()
    int8_kernel_env.setenv("INFERCHAIN_INT8_KERNEL", "torch")
    assert int8.native_kernel() is None
    int8.native_kernel.cache_clear()
    int8_kernel_env.setenv("INFERCHAIN_INT8_KERNEL", "fast")
    with pytest.raises(int8.Int8KernelError, match="auto, native or torch"):
        int8.native_kernel()


def test_linear_kernels_agree_and_each_shape_gets_the_one_timed_faster(smollm2, monkeypatch):
    """models/kernels.py: each fp32 weight shape runs on the kernel timed faster here (torch's BLAS or oneDNN);
    both give the same results up to float rounding, for decode rows, batches and prompts."""
    from inferchain.models import kernels

    if not kernels.onednn_available():
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setenv("INFERCHAIN_LINEAR_KERNEL", "auto")
    span = SpanModel(smollm2, 0, 1)
    layer = span.layers[0]
    for module in layer.modules():  # replaced where oneDNN won, kept where torch did, per shape
        if isinstance(module, torch.nn.Linear | kernels.FastLinear):
            picked = kernels.kernel_for(module.weight)
            assert isinstance(module, kernels.FastLinear) == (picked == "onednn")
    weight = layer.mlp.gate_proj.weight
    gen = torch.Generator().manual_seed(0)
    for shape in ((1, 1, 576), (16, 1, 576), (1, 40, 576)):
        x = torch.randn(*shape, generator=gen)
        with torch.inference_mode():
            a, b = kernels.KERNELS["torch"](x, weight, None), kernels.KERNELS["onednn"](x, weight, None)
        assert a.shape == b.shape
        assert ((a - b).abs().max() / a.abs().max()).item() < 1e-5
    monkeypatch.setenv("INFERCHAIN_LINEAR_KERNEL", "onednn")  # an operator's choice wins over the timing
    assert isinstance(SpanModel(smollm2, 0, 1).layers[0].mlp.down_proj, kernels.FastLinear)
    monkeypatch.setenv("INFERCHAIN_LINEAR_KERNEL", "torch")
    assert isinstance(SpanModel(smollm2, 0, 1).layers[0].mlp.down_proj, torch.nn.Linear)
    monkeypatch.setenv("INFERCHAIN_LINEAR_KERNEL", "fastest")
    with pytest.raises(kernels.KernelChoiceError, match="auto, torch or onednn"):
        SpanModel(smollm2, 0, 1)
