"""Decode weight layout (brlm.infer.layout): the engine's transposed and oneDNN-packed copies leave
the caller's model untouched, keep tied weights tied, decode the same tokens, and are chosen by a
measurement that is cached per machine and shape."""

import copy

import pytest
import torch

from brlm.infer import layout
from brlm.infer.engine import Engine
from brlm.infer.sampling import make_sampler

from .test_infer_engine import PROMPTS, tiny_model


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BRLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(layout, "_decided", {})
    monkeypatch.setattr(layout, "_load_per_core", lambda: 0.0)
    return tmp_path / "cache"


def test_transposed_copy_leaves_the_model_alone_and_keeps_ties():
    model = tiny_model("gpt")
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters(remove_duplicate=False)}
    dm, rec = layout.decode_layout(model, 4, "transposed")
    assert dm is not model
    for n, p in model.named_parameters():  # the caller's model: same storage, same values, row-major
        assert p.data_ptr() == before[n][0] and torch.equal(p, before[n][1]) and p.is_contiguous()
    new = dict(dm.named_parameters(remove_duplicate=False))
    linear = {f"{n}.weight" for n, m in dm.named_modules() if type(m) is torch.nn.Linear}
    for n, p in new.items():
        assert torch.equal(p, before[n][1])
        if n in linear or n == "wte.weight":  # relaid: column-major copies
            assert p.t().is_contiguous() and not p.is_contiguous() and p.data_ptr() != before[n][0], n
        else:  # everything else is the caller's tensor itself (no copy)
            assert p.data_ptr() == before[n][0], n
    assert dm.lm_head.weight is dm.wte.weight  # still tied
    assert set(rec["transposed"]) == linear | {"wte.weight"}
    assert rec["bytes"] == sum(model.get_parameter(n).numel() * 4 for n in linear)


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_relaid_engine_decodes_the_same_tokens(arch):
    model = tiny_model(arch)
    greedy = make_sampler(0)
    keep = Engine(model, max_batch=len(PROMPTS), layout="keep").generate_batch(PROMPTS, 12, greedy)
    moved = Engine(model, max_batch=len(PROMPTS), layout="transposed")
    assert moved.layout_record["transposed"] and moved.model is not model
    assert [ids for ids, _ in moved.generate_batch(PROMPTS, 12, greedy)] == [ids for ids, _ in keep]


def test_bf16_engine_relays_its_own_copy_in_place():
    model = tiny_model("llama")
    e = Engine(model, 2, dtype="bf16", layout="transposed")
    assert e.model.tok_emb.weight.dtype == torch.bfloat16 and not e.model.lm_head.weight.is_contiguous()
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())


def test_choice_follows_the_measurement_and_is_cached_per_machine(cache_dir, monkeypatch):
    calls = []

    def fake(w, bias, rows):  # the head is faster transposed, nothing else is
        calls.append(tuple(w.shape))
        return {"row": 1.0, "transposed": 0.5 if w.shape[0] == 97 else 0.95}

    monkeypatch.setattr(layout, "measure", fake)
    model = tiny_model("llama")
    dm, rec = layout.decode_layout(model, 8)
    assert set(rec["transposed"]) == {"tok_emb.weight", "lm_head.weight"}
    assert not dm.lm_head.weight.is_contiguous() and dm.layers[0].attn.wq.weight.is_contiguous()
    shapes = {tuple(s) for s in calls}
    assert len(calls) == len(shapes)  # one measurement per distinct shape
    assert (cache_dir / "decode_layout.json").is_file()

    monkeypatch.setattr(layout, "_decided", {})  # a new process: decided from the file, not measured
    monkeypatch.setattr(layout, "measure", lambda *a: pytest.fail("measured again"))
    _, again = layout.decode_layout(model, 8)
    assert again["transposed"] == rec["transposed"]
    monkeypatch.setattr(layout, "measure", fake)
    layout.decode_layout(model, 4)  # another batch size is another measurement
    assert len(calls) == 2 * len(shapes)


def test_bf16_packing_only_where_the_cpu_supports_it():
    """An AVX2-only CPU (AMD EPYC Zen 3) cannot pack a bf16 weight for oneDNN: the packed form is
    not offered there, and bf16 decoding keeps the row-major forms (it crashed before)."""
    if not layout.packing_available():
        pytest.skip("this PyTorch has no oneDNN (mkldnn)")
    assert layout.packing_available(torch.bfloat16) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    times = layout.measure(torch.randn(64, 32).bfloat16(), None, 2)
    assert ("packed" in times) == layout.packing_available(torch.bfloat16)


def test_cpu_kind_tells_apart_cpus_that_share_a_model_name():
    from brlm.io.machine import cpu_kind

    zen3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n\n"
    zen4 = zen3.replace("model\t\t: 1", "model\t\t: 17")
    assert cpu_kind(zen3) == "AMD EPYC (family 25 model 1)"
    assert cpu_kind(zen4) == "AMD EPYC (family 25 model 17)"
    assert cpu_kind("model name\t: Apple M2\n") == "Apple M2"  # no family / model: the name alone


def test_cpu_fields_reads_the_first_processor_and_proc_cpuinfo_once(monkeypatch):
    from brlm.io import machine

    two = ("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nflags\t\t: fpu avx2 avx512_bf16\n\n"
           "processor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\nflags\t\t: fpu\n\n")
    fields = machine.cpu_fields(two)
    assert (fields["processor"], fields["cpu family"], fields["model"]) == ("0", "25", "17")
    assert fields["flags"].split() == ["fpu", "avx2", "avx512_bf16"]
    assert machine.cpu_fields("") == {}
    # machine_key runs at every plan / layout lookup: /proc/cpuinfo is read once per process
    reads = []
    monkeypatch.setattr(machine.Path, "read_text", lambda self, *a, **k: reads.append(str(self)) or two)
    machine._proc_cpuinfo.cache_clear()
    try:
        keys = {machine.machine_key(2, "x") for _ in range(3)}
        assert machine.cpu_flags() == {"fpu", "avx2", "avx512_bf16"}
    finally:
        machine._proc_cpuinfo.cache_clear()
    assert reads == ["/proc/cpuinfo"]
    assert len(keys) == 1 and "(family 25 model 17)|" in next(iter(keys))


def test_another_cpu_kind_under_the_same_name_measures_again(cache_dir, monkeypatch):
    """A cache folder shared by a cluster's nodes (an NFS home): a Zen 4's layout choices are not
    handed to a Zen 3 that the VM names the same 'AMD EPYC'."""
    from brlm.io import machine

    calls = []

    def fake(w, bias, rows):
        calls.append(tuple(w.shape))
        return {"row": 1.0, "transposed": 0.5}

    monkeypatch.setattr(layout, "measure", fake)
    monkeypatch.setattr(machine, "cpu_kind", lambda: "AMD EPYC (family 25 model 17)")
    layout.decode_layout(tiny_model("llama"), 8)
    first = len(calls)
    monkeypatch.setattr(layout, "_decided", {})  # a new process ...
    layout.decode_layout(tiny_model("llama"), 8)
    assert len(calls) == first  # ... on the same kind reads the cache
    monkeypatch.setattr(layout, "_decided", {})
    monkeypatch.setattr(machine, "cpu_kind", lambda: "AMD EPYC (family 25 model 1)")
    layout.decode_layout(tiny_model("llama"), 8)
    assert len(calls) == 2 * first  # ... on another kind measures for itself


def test_busy_machine_decides_for_this_process_only(cache_dir, monkeypatch):
    monkeypatch.setattr(layout, "_load_per_core", lambda: 1.5)
    monkeypatch.setattr(layout, "measure", lambda w, b, r: {"row": 1.0, "transposed": 0.1})
    layout.decode_layout(tiny_model("llama"), 8)
    assert not (cache_dir / "decode_layout.json").exists()


def test_keep_and_memory_guard_return_the_model_itself(cache_dir, monkeypatch):
    model = tiny_model("gpt")
    dm, rec = layout.decode_layout(model, 8, "keep")
    assert dm is model and rec["transposed"] == []
    monkeypatch.setattr(layout, "_available_bytes", lambda: 1000)
    dm, rec = layout.decode_layout(model, 8, "transposed")
    assert dm is model and "quarter of the available memory" in rec["skipped"]
    with pytest.raises(ValueError, match="layout='sideways': expected one of auto, keep, transposed"):
        layout.decode_layout(model, 8, "sideways")


@pytest.mark.parametrize("bf16_time,want", [(0.5, "bf16"), (0.95, "fp32"), (2.0, "fp32")])
def test_auto_dtype_takes_bf16_only_where_measured_faster(cache_dir, monkeypatch, bf16_time, want):
    def fake(w, bias, rows):
        t = bf16_time if w.dtype == torch.bfloat16 else 1.0
        return {"row": t, "transposed": 2 * t}

    monkeypatch.setattr(layout, "measure", fake)
    monkeypatch.setattr(layout, "cpu_bf16_support", lambda: {"amx_bf16": False, "avx512_bf16": True})
    model = tiny_model("llama")
    e = Engine(model, 2, dtype="auto")
    assert e.dtype_name == want and e.describe()["dtype"] == want
    assert f"bf16 takes {bf16_time:.2f}x the fp32 time" in e.describe()["dtype_choice"]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_auto_dtype_without_native_bf16_is_fp32_unmeasured(cache_dir, monkeypatch):
    monkeypatch.setattr(layout, "measure", lambda *a: pytest.fail("measured"))
    dtype, rec = layout.choose_decode_dtype(tiny_model("gpt"), 8, support={"amx_bf16": False, "avx512_bf16": False})
    assert dtype == torch.float32 and rec["reason"] == "no native bf16 on this CPU"


def test_weights_off_the_cpu_are_not_timed(cache_dir, monkeypatch):
    """Only CPU matmuls are timed (a GPU's are asynchronous): elsewhere the layout is kept and
    `auto` does not measure (meta tensors stand in for a GPU here)."""
    monkeypatch.setattr(layout, "measure", lambda *a: pytest.fail("measured"))
    model = tiny_model("llama").to("meta")
    dm, rec = layout.decode_layout(model, 8)
    assert dm is model and rec["transposed"] == []
    dtype, why = layout.choose_decode_dtype(model, 8, support={"amx_bf16": True, "avx512_bf16": True})
    assert dtype == torch.float32 and why["reason"] == "meta weights: not measured, fp32"


needs_packing = pytest.mark.skipif(not layout.packing_available(), reason="this PyTorch has no oneDNN (mkldnn)")


@needs_packing
def test_packed_copy_leaves_the_model_alone_and_keeps_ties():
    model = tiny_model("gpt")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dm, rec = layout.decode_layout(model, 4, "packed")
    assert all(type(m) is not layout.PackedLinear for m in model.modules())  # the caller's tree is untouched
    assert all(torch.equal(p, before[n]) and p.is_contiguous() for n, p in model.named_parameters())
    linear = {f"{n}.weight" for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    assert set(rec["packed"]) == linear and rec["transposed"] == []
    assert isinstance(dm.lm_head, layout.PackedLinear) and dm.lm_head.weight is dm.wte.weight is model.wte.weight
    assert rec["bytes"] == sum(model.get_parameter(n).numel() * 4 for n in linear)
    x = torch.randn(3, 2, model.cfg.n_embd)
    with torch.inference_mode():  # the packed product is F.linear to float rounding, 3-D input included
        torch.testing.assert_close(dm.h[0].mlp.c_fc(x), model.h[0].mlp.c_fc(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(copy.deepcopy(dm).lm_head(x), model.lm_head(x), rtol=1e-5, atol=1e-5)


@needs_packing
@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_packed_engine_decodes_the_same_tokens_eager_and_compiled(arch):
    model = tiny_model(arch)
    greedy = make_sampler(0)
    keep = [ids for ids, _ in Engine(model, max_batch=len(PROMPTS), layout="keep").generate_batch(PROMPTS, 12, greedy)]
    packed = Engine(model, max_batch=len(PROMPTS), layout="packed")
    assert packed.describe()["packed_weights"] == len(packed.layout_record["packed"]) > 0
    assert [ids for ids, _ in packed.generate_batch(PROMPTS, 12, greedy)] == keep
    if arch == "llama":  # the packed weight reaches the compiled step through a custom op, by key
        compiled = Engine(model, max_batch=len(PROMPTS), layout="packed", compile=True)
        assert [ids for ids, _ in compiled.generate_batch(PROMPTS, 12, greedy)] == keep
        assert compiled.describe()["compiled"]


def test_choice_takes_the_fastest_form_at_the_gain(cache_dir, monkeypatch):
    def fake(w, bias, rows):  # head: packed fastest; w1 and w3 (128 x 32): transposed; wq (32 x 32): packed only 0.95x
        if w.shape[0] == 97:
            return {"row": 1.0, "transposed": 0.6, "packed": 0.3}
        if w.shape[0] == 128:
            return {"row": 1.0, "transposed": 0.5, "packed": 0.7}
        return {"row": 1.0, "transposed": 1.2, "packed": 0.95}

    monkeypatch.setattr(layout, "measure", fake)
    model = tiny_model("llama")
    dm, rec = layout.decode_layout(model, 8)
    assert rec["packed"] == ["lm_head.weight"] and isinstance(dm.lm_head, layout.PackedLinear)
    assert {n for n in rec["transposed"]} == {f"layers.{i}.ffn.{w}.weight" for i in range(2) for w in ("w1", "w3")}
    assert type(dm.layers[0].attn.wq) is torch.nn.Linear and dm.layers[0].attn.wq.weight.is_contiguous()
    assert all(s["form"] in ("row", "transposed", "packed") for s in rec["shapes"].values())


def test_packed_refused_where_onednn_cannot_pack(monkeypatch):
    monkeypatch.setattr(layout, "packing_available", lambda dtype=torch.float32: False)
    with pytest.raises(ValueError, match="layout='packed': needs fp32 or bf16 CPU weights and a PyTorch built with oneDNN"):
        layout.decode_layout(tiny_model("gpt"), 4, "packed")


def test_auto_dtype_compares_each_shape_in_its_fastest_form(cache_dir, monkeypatch):
    def fake(w, bias, rows):  # bf16 row-major is slower, but bf16 packed beats every fp32 form
        if w.dtype == torch.bfloat16:
            return {"row": 2.0, "transposed": 2.0, "packed": 0.4}
        return {"row": 1.0, "transposed": 1.0, "packed": 0.95}

    monkeypatch.setattr(layout, "measure", fake)
    dtype, rec = layout.choose_decode_dtype(tiny_model("llama"), 8, support={"amx_bf16": False, "avx512_bf16": True})
    assert dtype == torch.bfloat16 and "bf16 takes 0.40x the fp32 time" in rec["reason"]


def test_measure_reads_each_weight_cold_by_cycling_through_copies(monkeypatch):
    """Each form is timed over COLD_BYTES worth of copies of the weight, taken in turn (as a decode
    step streams every weight once), not on one weight that stays in cache."""
    w, b = torch.randn(64, 32), torch.randn(64)
    monkeypatch.setattr(layout, "COLD_BYTES", 5 * w.numel() * w.element_size())  # 5 copies
    seen: list[int] = []
    real = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, wt, bias=None: seen.append(wt.data_ptr()) or real(x, wt, bias))
    times = layout.measure(w, b, rows=8)
    assert set(times) >= {"row", "transposed"} and all(0 < t < 1 for t in times.values())
    # row and transposed copies: 5 distinct weights each, every one used equally often (6 passes)
    assert len(set(seen)) == 10 and all(seen.count(p) == 6 for p in set(seen))
    assert w.data_ptr() not in seen  # copies, never the caller's weight (which may be hot)
    big = torch.randn(64, 32)
    monkeypatch.setattr(layout, "COLD_BYTES", big.numel() * big.element_size())  # the weight alone fills it
    seen.clear()
    layout.measure(big, None, rows=1)
    assert big.data_ptr() in seen  # not copied: one pass over it is already cold


@pytest.mark.parametrize("packed,want", [(0.85, "transposed"), (0.5, "packed")])
def test_one_row_packs_only_on_a_clear_lead(cache_dir, monkeypatch, packed, want):
    """At one row the packed form must take <= 0.75x the best other form (a marginal lead timed
    alone turned into a loss in the model); at 8 rows the same times pack."""
    monkeypatch.setattr(layout, "measure", lambda w, b, rows: {"row": 1.0, "transposed": 0.8, "packed": packed * 0.8})
    m = torch.nn.Linear(32, 97)
    assert layout.shape_times(m, 1)["form"] == want
    assert layout.shape_times(m, 8)["form"] == "packed"
