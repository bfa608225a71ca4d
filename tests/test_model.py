"""Model section: the Gated DeltaNet reference, document boundaries, attention mask, weight sharing."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

import train_gpt
from conftest import PLAIN_INPUTS, TINY_MODEL, tiny_model
from scripts.common import recurrence_fp64

in_triton_interpreter = pytest.mark.skipif(
    train_gpt.triton is None or os.environ.get("TRITON_INTERPRET") != "1",
    reason="needs Triton, run on the CPU by its interpreter (TRITON_INTERPRET=1 before import)")
on_gpu_with_triton = pytest.mark.skipif(not torch.cuda.is_available() or train_gpt.triton is None,
                                        reason="needs CUDA and Triton")


def assert_no_worse_than_before(names, fast, before, exact):
    """Each fast kernel's output or gradient is within 1% of float64, and no further from it than the bf16
    composition the model ran before (plus 1e-3)."""
    for name, f, b, e in zip(names, fast, before, exact):
        err = lambda t: ((t.double() - e).norm() / e.norm()).item()  # noqa: E731
        assert err(f) < 1e-2 and err(f) <= err(b) + 1e-3, (name, err(f), err(b))


def random_gdn_inputs(B, T, H, K, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = (F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1) for _ in range(2))
    v = torch.randn(B, T, H, K, generator=gen)
    g = -torch.rand(B, T, H, generator=gen) * 0.7
    beta = torch.rand(B, T, H, generator=gen)
    return q, k, v, g, beta


@pytest.mark.parametrize("chunk, T", [(16, 16), (16, 37), (32, 100), (64, 130)])
@pytest.mark.parametrize("resets", [False, True])
def test_chunked_reference_matches_fp64_recurrence(chunk, T, resets):
    q, k, v, g, beta = random_gdn_inputs(2, T, 3, 8, seed=T + chunk)
    if resets:
        g[:, [0, T // 3, T // 2]] += train_gpt.DOC_RESET_GATE
    out = train_gpt.gated_delta_rule_ref(q, k, v, g, beta, 8 ** -0.5, chunk=chunk)
    ref = recurrence_fp64(q, k, v, g, beta, 8 ** -0.5)
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-5


def test_reset_gate_stops_state_crossing_a_document():
    q, k, v, g, beta = random_gdn_inputs(1, 80, 2, 8, seed=0)
    g[:, 50] += train_gpt.DOC_RESET_GATE
    out = train_gpt.gated_delta_rule_ref(q, k, v, g, beta, 8 ** -0.5)
    v2 = v.clone()
    v2[:, :50] = torch.randn_like(v2[:, :50]) * 10
    out2 = train_gpt.gated_delta_rule_ref(q, k, v2, g, beta, 8 ** -0.5)
    assert not torch.allclose(out[:, :50], out2[:, :50])
    assert (out[:, 50:] - out2[:, 50:]).abs().max() < 1e-9 * 10 * 80


def conv_by_loop(x, weight, doc):
    """The document-masked causal convolution written as its definition, one output at a time."""
    B, T, C = x.shape
    out = torch.zeros(B, T, C, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            for j in range(weight.size(1)):
                if t >= j and (doc is None or doc[b, t] == doc[b, t - j]):
                    out[b, t] += x[b, t - j].double() * weight[:, -1 - j].double()
    return out


def random_conv_inputs(B, T, C, device, seed):
    gen = torch.Generator().manual_seed(seed)
    x, weight = torch.randn(B, T, C, generator=gen), torch.randn(C, 4, generator=gen)
    bos = torch.rand(B, T, generator=gen) < 0.05
    bos[:, 0] = True
    return x.to(device), weight.to(device), bos.cumsum(1).int().to(device)


@pytest.mark.parametrize("with_doc", [True, False])
def test_reference_conv_is_causal_and_keeps_to_one_document(with_doc):
    x, weight, doc = random_conv_inputs(2, 50, 6, "cpu", seed=1)
    doc = doc if with_doc else None
    out = train_gpt.causal_conv_ref(x, weight, doc)
    assert (out.double() - conv_by_loop(x, weight, doc)).abs().max() < 1e-5


@on_gpu_with_triton
@pytest.mark.parametrize("B, T, heads, D", [(2, 2048, 4, 128), (3, 100, 2, 16)])
def test_triton_conv_qkv_matches_the_reference_forward_and_backward(B, T, heads, D):
    x, weight, doc = random_conv_inputs(B, T, 3 * heads * D, "cuda", seed=T)
    x, weight = x.bfloat16().requires_grad_(), weight.requires_grad_()
    douts = [torch.randn(B, T, heads, D, device="cuda") for _ in range(3)]

    def outputs_and_grads(x, weight, conv):
        outs = conv(x, weight, doc, heads)
        loss = sum((o.double() * d.double()).sum() for o, d in zip(outs, douts))
        return (*outs, *torch.autograd.grad(loss, (x, weight)))

    fast = outputs_and_grads(x, weight, train_gpt.conv_qkv)
    before = outputs_and_grads(x, weight.bfloat16(), train_gpt.conv_qkv_ref)  # bf16, as the model ran before
    x64, w64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    exact = outputs_and_grads(x64, w64, train_gpt.conv_qkv_ref)
    assert_no_worse_than_before(("q", "k", "v", "dx", "dweight"), fast, before, exact)


@pytest.mark.skipif(not torch.cuda.is_available() or train_gpt.rms_norm_gated is None, reason="needs CUDA and fla")
@pytest.mark.parametrize("shape", [(48, 2048, 4, 128), (3, 100, 2, 16)])
def test_gated_rms_norm_on_the_gpu_matches_the_reference(shape):
    gen = torch.Generator(device="cuda").manual_seed(0)
    x, gate, dy = (torch.randn(*shape, device="cuda", generator=gen) for _ in range(3))
    weight = 1 + 0.1 * torch.randn(shape[-1], device="cuda", generator=gen)

    def outputs_and_grads(x, gate, weight, norm):
        y = norm(x, gate, weight)
        return (y, *torch.autograd.grad(y, (x, gate, weight), dy.to(y.dtype)))

    reference = lambda x, g, w: train_gpt.rms_norm(x) * w.to(x.dtype) * F.silu(g)  # noqa: E731
    ins = [x.bfloat16().requires_grad_(), gate.bfloat16().requires_grad_(), weight.requires_grad_()]
    fast = outputs_and_grads(*ins, train_gpt.gated_rms_norm)
    before = outputs_and_grads(*ins, reference)  # bf16 in separate kernels, as the model ran before
    exact = outputs_and_grads(*(t.detach().double().requires_grad_() for t in ins), reference)
    assert fast[0].dtype == torch.bfloat16
    assert_no_worse_than_before(("y", "dx", "dgate", "dweight"), fast, before, exact)


@in_triton_interpreter
@pytest.mark.parametrize("B, T, heads, D", [(2, 100, 2, 16), (1, 70, 1, 128)])
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # rows past T: 0/0 in an unused branch
def test_triton_conv_kernels_in_the_interpreter_match_the_fp64_reference(B, T, heads, D):
    x, weight, doc = random_conv_inputs(B, T, 3 * heads * D, "cpu", seed=T)
    x, weight, doc = x.requires_grad_(), weight.requires_grad_(), doc.int()
    douts = [torch.randn(B, T, heads * D) for _ in range(3)]
    outs = train_gpt.ConvQKV.apply(x, weight, doc, heads)
    grads = torch.autograd.grad(sum((o * d).sum() for o, d in zip(outs, douts)), (x, weight))
    x64, w64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    exact = [o.reshape(B, T, -1) for o in train_gpt.conv_qkv_ref(x64, w64, doc, heads)]
    exact_grads = torch.autograd.grad(sum((o * d.double()).sum() for o, d in zip(exact, douts)), (x64, w64))
    for name, f, e in zip(("q", "k", "v", "dx", "dweight"), [*outs, *grads], [*exact, *exact_grads]):
        assert ((f.double() - e).norm() / e.norm()).item() < 1e-5, name


@in_triton_interpreter
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # as above
def test_tune_conv_launches_the_kernels_as_convqkv_does():
    from scripts.bench import tune_conv
    B, T, heads, D = 2, 70, 2, 16
    x, weight, doc = random_conv_inputs(B, T, 3 * heads * D, "cpu", seed=5)
    g = torch.randn(B, T, heads * D, generator=torch.Generator().manual_seed(6))
    fns, written = tune_conv.launches(x, weight, doc, g, heads, train_gpt.ConvQKV.BT)
    for fn in fns.values():
        fn(4)
    x, weight = x.requires_grad_(), weight.requires_grad_()
    outs = train_gpt.ConvQKV.apply(x, weight, doc, heads)
    dx, dweight = torch.autograd.grad(outs, (x, weight), (g, g, g))
    assert torch.equal(written["v"], outs[2]) and torch.equal(written["dx"], dx)
    assert torch.equal(written["dweight"].sum(0), dweight)


@in_triton_interpreter
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # as above
def test_tune_conv_times_versions_in_turns_after_checking_their_gradients(capsys, monkeypatch):
    from scripts.bench import tune_conv
    B, T, heads, D = 1, 70, 1, 16
    x, weight, doc = random_conv_inputs(B, T, 3 * heads * D, "cpu", seed=7)
    g = torch.randn(B, T, heads * D, generator=torch.Generator().manual_seed(8))
    order = []
    monkeypatch.setattr(tune_conv, "cuda_ms", lambda step, n: order.append(step) or 1.0 + 0.1 * len(order))
    path = train_gpt.__file__
    tune_conv.compare_versions([path, path], x, weight, doc.int(), g, heads, rounds=2)
    out = capsys.readouterr().out
    assert "dx max diff 0, dw max diff / max 0" in out
    assert order[0] is order[3] and order[1] is order[2] and order[0] is not order[1]  # turns alternate
    assert "1.200 1.300; median 1.250, 1.000x the first, faster in 1 of 2 rounds" in out  # 1.1, 1.2, then 1.3, 1.4


def relu2(h):
    return h.relu().square()


def relu2_case(seed: int, backward: bool, M: int, K: int, N: int):
    """a [M, K], bt [N, K], a forward's r [M, N] (from a random h), in float64, and what the relu^2 matmul gives
    in that direction."""
    gen = torch.Generator().manual_seed(seed)
    a, bt, h = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in ((M, K), (N, K), (M, N)))
    r = relu2(h)
    want = a @ bt.t() * 2 * r.sqrt() if backward else relu2(a @ bt.t())
    return a, bt, r, want


@in_triton_interpreter
@pytest.mark.parametrize("backward", [False, True])
def test_relu2_matmul_epilogues_in_the_interpreter(backward):
    # no multiples of the tiles, so the edges are tested; one program walks all 3 x 3 tiles
    a, bt, r, want = relu2_case(2, backward, M=300, K=24, N=520)
    if backward:  # b [K, N] contiguous
        out = train_gpt.relu2_matmul(a.float(), bt.t().contiguous().float(), r.float())
    else:  # b a view of [N, K]
        out = train_gpt.relu2_matmul(a.float(), bt.float().t())
    assert ((out.double() - want).norm() / want.norm()).item() < 1e-5


@in_triton_interpreter
def test_relu_squared_mlp_gradients_in_the_interpreter():
    gen = torch.Generator().manual_seed(3)
    x, fc, proj, gy = (torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True)
                       for s in ((2, 32, 32), (48, 32), (32, 48), (2, 32, 32)))
    want = torch.autograd.grad(relu2(x @ fc.t()) @ proj.t(), (x, fc, proj), gy)
    ins = [t.detach().float().requires_grad_() for t in (x, fc, proj)]
    got = torch.autograd.grad(train_gpt.ReluSquaredMLP.apply(*ins), ins, gy.detach().float())
    for g, w in zip(got, want):
        assert g.shape == w.shape and ((g.double() - w).norm() / w.norm()).item() < 1e-5


def test_mlp_squares_a_relu_without_gradients():
    mlp = train_gpt.MLP(TINY_MODEL["model_dim"], 2)
    torch.nn.init.normal_(mlp.proj.weight, std=0.1)  # zero-initialised: nothing to compare
    x = torch.randn(3, TINY_MODEL["model_dim"], generator=torch.Generator().manual_seed(0))
    h = x @ mlp.fc.weight.t()
    assert (h < 0).any()
    torch.testing.assert_close(mlp(x), relu2(h) @ mlp.proj.weight.t())


@on_gpu_with_triton
@pytest.mark.parametrize("shape, dim", [((48, 2048), 512), ((3, 100), 64)])  # the second is no multiple of a tile
def test_mlp_in_training_on_the_gpu_matches_the_reference(shape, dim):
    torch.manual_seed(0)
    mlp = train_gpt.MLP(dim, 3).cuda()
    torch.nn.init.normal_(mlp.proj.weight, std=dim ** -0.5)  # zero-initialised: nothing to compare
    x = torch.randn(*shape, dim, device="cuda").bfloat16().requires_grad_()
    g = torch.randn(*shape, dim, device="cuda")
    scale = (1 + 0.5 * torch.randn(dim, device="cuda")).requires_grad_()  # as a block's mlp_scale

    def outputs_and_grads(x, fc, proj, scale, mlp=None):
        y = mlp(x, scale) if mlp else scale.to(x.dtype) * F.linear(relu2(F.linear(x, fc.to(x.dtype))), proj.to(x.dtype))
        return (y, *torch.autograd.grad(y, (x, fc, proj, scale), g.to(y.dtype)))

    weights = (mlp.fc.weight, mlp.proj.weight, scale)
    fast = outputs_and_grads(x, *weights, mlp)
    before = outputs_and_grads(x, *weights)  # bf16 through cuBLAS and separate kernels, as inference runs
    exact = outputs_and_grads(*(t.detach().double().requires_grad_() for t in (x, *weights)))
    assert_no_worse_than_before(("y", "dx", "dfc", "dproj", "dscale"), fast, before, exact)


@on_gpu_with_triton
def test_mlp_in_training_follows_autocast_like_the_modules():
    torch.manual_seed(0)
    mlp = train_gpt.MLP(64, 3).cuda()
    torch.nn.init.normal_(mlp.proj.weight, std=0.1)
    x = torch.randn(2, 100, 64, device="cuda", requires_grad=True)  # float32 in, as a caller outside the blocks
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast = mlp(x)
        with torch.no_grad():
            modules = mlp(x)  # the modules' path
    (dx,) = torch.autograd.grad(fast.float().square().sum(), x)
    assert fast.dtype == modules.dtype == torch.bfloat16 and dx.dtype == torch.float32
    assert ((fast.float() - modules.float()).norm() / modules.float().norm()).item() < 1e-2


def test_rotary_keeps_lengths_and_scores_depend_only_on_the_offset():
    T, D = 12, 16
    cos, sin = train_gpt.rotary_tables(T, D, 10000.0, "cpu")
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(D, generator=gen, dtype=torch.float64).expand(T, D) for _ in range(2))
    qs, ks = train_gpt.rotary(q, cos, sin), train_gpt.rotary(k, cos, sin)
    assert torch.allclose(qs.norm(dim=-1), q.norm(dim=-1), rtol=1e-6, atol=0)
    scores = qs @ ks.T  # query at position i, key at position j: a function of i - j alone
    for offset in range(1 - T, T):
        band = torch.diagonal(scores, offset)
        assert torch.allclose(band, band[:1].expand_as(band), rtol=0, atol=1e-5 * q.norm() * k.norm())
    assert not torch.allclose(scores[0, 0], scores[1, 0])  # and positions do matter


def dense_mask(T, window, doc):
    return train_gpt.attention_mask(1, T, window, doc, torch.device("cpu"))[0, 0]


def test_attention_mask_is_causal_and_exactly_the_window():
    m = dense_mask(40, 8, None)
    for qi in range(40):
        assert m[qi].nonzero().flatten().tolist() == list(range(max(0, qi - 7), qi + 1))


def test_attention_mask_keeps_to_one_document():
    doc = torch.tensor([[0] * 10 + [1] * 30])
    m = dense_mask(40, 16, doc)
    assert not m[10:, :10].any() and not m[:10, 10:].any()
    assert m[25, 10:26].all() and m[39, 24:40].all() and not m[39, :24].any()


@pytest.mark.parametrize("T,window", [(2048, 512), (1024, 300)])
def test_block_mask_from_documents_matches_create_block_mask(T, window):
    from torch.nn.attention.flex_attention import create_block_mask
    doc = (torch.rand(3, T, generator=torch.Generator().manual_seed(T)) < 0.004).int().cumsum(1)
    doc[1] = 0  # one row of a single document, so some blocks are full
    allowed = lambda b, h, qi, ki: (qi >= ki) & (qi - ki < window) & (doc[b, qi] == doc[b, ki])  # noqa: E731
    ours = train_gpt.block_mask(allowed, T, window, doc)
    ref = create_block_mask(allowed, 3, None, T, T, device="cpu")
    assert ours.kv_num_blocks.tolist() == ref.kv_num_blocks.tolist()
    assert ours.full_kv_num_blocks.tolist() == ref.full_kv_num_blocks.tolist()
    assert torch.equal(ours.to_dense(), ref.to_dense())
    assert ref.full_kv_num_blocks.sum() > 0 and ref.kv_num_blocks.sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention kernels need a GPU")
def test_flex_attention_with_the_document_block_mask_matches_create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask
    B, T, window, dev = 4, 2048, 512, torch.device("cuda")
    ids = torch.randint(2, 1024, (B, T), device=dev)
    ids[torch.rand(B, T, device=dev) < 1 / 300] = train_gpt.BOS_ID
    doc = (ids == train_gpt.BOS_ID).int().cumsum(1)
    ours = train_gpt.attention_mask(B, T, window, doc, dev)
    ref = create_block_mask(ours.mask_mod, B, None, T, T, device=dev)
    q, k, v = torch.randn(3, B, 4, T, 128, device=dev, dtype=torch.bfloat16).unbind(0)
    diff = train_gpt._flex_attention(q, k, v, block_mask=ours) - train_gpt._flex_attention(q, k, v, block_mask=ref)
    assert diff.abs().max() < 1e-2  # not bitwise: the two masks may list a row's blocks in another order


def test_x0_fanout_gives_the_gradients_of_the_scaled_shares():
    x, scales = torch.randn(2, 3, 5, requires_grad=True), [torch.randn(5, requires_grad=True) for _ in range(3)]
    stream, *shares = train_gpt.X0Fanout.apply(x, *scales)
    assert len(shares) == 3 and torch.equal(stream, x) and all(torch.equal(o, x) for o in shares)
    weights = torch.randn(4, 2, 3, 5)
    later = train_gpt.ScaledLater.apply
    out = weights[0] * stream + sum(w * later(o, s) for w, o, s in zip(weights[1:], shares, scales))
    want = weights[0] * x + sum(w * s * x for w, s in zip(weights[1:], scales))
    assert torch.allclose(out, want)
    got, ref = torch.autograd.grad(out.sum(), [x, *scales]), torch.autograd.grad(want.sum(), [x, *scales])
    assert all(torch.allclose(g, r, atol=1e-5) for g, r in zip(got, ref))


def test_the_embedding_learns_from_the_stream_and_every_blocks_x0_mix(monkeypatch):
    ids = torch.randint(0, 64, (2, 16))
    model, ref = tiny_model(x0_mix=1), tiny_model(x0_mix=1)  # one seed: the same weights
    for m in (model, ref):
        torch.manual_seed(1)  # the same non-zero scales in both: zeros would pass the shares no gradient
        for block in m.blocks:
            block.x0_scale.data.normal_()
    model(ids, ids).mean().backward()
    monkeypatch.setattr(train_gpt.ScaledLater, "apply", lambda x0, s: s * x0)  # the plain product, to autograd
    ctx = ref.context(ids)
    x = ctx["x0"] = ref.embed_inputs(ids, ctx)  # every use of the embedding summed by autograd itself
    for block in ref.blocks:
        x = sum(block(x, ctx, block.mixer or ref.attn))
    ref.nll(x, ids).mean().backward()
    assert torch.allclose(model.embed.weight.grad, ref.embed.weight.grad, rtol=1e-4, atol=1e-7)
    for ours, theirs in zip(model.blocks, ref.blocks):
        assert torch.allclose(ours.x0_scale.grad, theirs.x0_scale.grad, rtol=1e-4, atol=1e-7)


def model_and_context_for_blocks():
    """A tiny model and its context for random ids, x0 (the embedding) detached: for calling its blocks alone."""
    model = tiny_model()
    ids = torch.randint(4, 64, (2, 24))
    ctx = model.context(ids)
    ctx["x0"] = model.embed_inputs(ids, ctx).detach()
    return model, ctx


def test_blocks_scale_their_mixer_and_mlp_outputs_through_the_weights_as_by_the_outputs():
    model, ctx = model_and_context_for_blocks()
    for block in model.blocks:
        mixer = block.mixer or model.attn
        with torch.no_grad():
            block.mix_scale.normal_(1, 0.5), block.mlp_scale.normal_(1, 0.5)
        x = torch.randn(2, 24, TINY_MODEL["model_dim"], requires_grad=True)
        wrt = [x, *(p for p in block.parameters() if p is not block.x0_scale), *mixer.parameters()]

        def by_the_outputs(x):  # the x0 share as in the block: its gradients are X0Fanout's, tested above
            x = x + train_gpt.ScaledLater.apply(ctx["x0"], block.x0_scale)
            x = x + block.mix_scale * mixer(train_gpt.rms_norm(x), ctx)
            return x + block.mlp_scale * block.mlp(train_gpt.rms_norm(x))

        got, want = sum(block(x, ctx, mixer)), by_the_outputs(x)
        gy = torch.randn_like(got)
        assert ((got - want).norm() / want.norm()).item() < 1e-6
        for g, w in zip(torch.autograd.grad(got, wrt, gy), torch.autograd.grad(want, wrt, gy)):
            assert ((g - w).norm() / w.norm()).item() < 1e-5


def test_a_block_given_the_previous_blocks_pair_adds_it_first():
    model, ctx = model_and_context_for_blocks()
    for block in model.blocks:
        x, y = torch.randn(2, 2, 24, TINY_MODEL["model_dim"]).unbind(0)
        x.requires_grad_(), y.requires_grad_()
        got, want = sum(block(x, ctx, block.mixer or model.attn, y)), sum(block(x + y, ctx, block.mixer or model.attn))
        gy = torch.randn_like(got)
        assert torch.allclose(got, want, atol=1e-6)
        (want_x,), (got_x, got_y) = torch.autograd.grad(want, [x], gy), torch.autograd.grad(got, [x, y], gy)
        assert torch.allclose(got_x, want_x, atol=1e-6) and torch.allclose(got_y, want_x, atol=1e-6)


@pytest.mark.parametrize("features", [{}, PLAIN_INPUTS])
def test_model_is_causal(features):
    model = tiny_model(**features)
    ids = torch.randint(4, 64, (2, 40))
    other = ids.clone()
    other[:, 25:] = torch.randint(4, 64, (2, 15))
    with torch.no_grad():
        a, b = model.logits(ids), model.logits(other)
    assert (a[:, :25] - b[:, :25]).abs().max() < 1e-4 and not torch.allclose(a[:, 25:], b[:, 25:])


@pytest.mark.parametrize("features", [{}, PLAIN_INPUTS])
def test_model_outputs_never_cross_a_bos_token(features):
    model = tiny_model(**features)
    ids = torch.randint(4, 64, (1, 48))
    ids[0, 0] = ids[0, 20] = train_gpt.BOS_ID
    other = ids.clone()
    other[0, 1:20] = torch.randint(4, 64, (19,))
    with torch.no_grad():
        a, b = model.logits(ids), model.logits(other)
    assert not torch.allclose(a[0, :20], b[0, :20])
    assert (a[0, 20:] - b[0, 20:]).abs().max() < 1e-4


@pytest.mark.parametrize("features", [{}, PLAIN_INPUTS])
def test_without_doc_reset_context_flows_across_bos(features):
    model = tiny_model(doc_reset=0, **features)
    ids = torch.randint(4, 64, (1, 48))
    ids[0, 0] = ids[0, 20] = train_gpt.BOS_ID
    other = ids.clone()
    other[0, 15:20] = torch.randint(4, 64, (5,))
    with torch.no_grad():
        assert (model.logits(ids)[0, 20:] - model.logits(other)[0, 20:]).abs().max() > 1e-4


def test_swa_shared_reuses_the_first_swa_attention_once():
    model = tiny_model()
    swa = [i for i, kind in enumerate(model.layout) if kind == "swa"]
    assert model.layout == ["gdn", "swa", "gdn", "swa"] and len(swa) == 2
    assert all(model.blocks[i].mixer is None for i in swa)
    names = [n for n, _ in model.named_parameters()]
    assert sum(n.startswith("attn.") for n in names) == 4 and len(names) == len(set(names))
    assert set(model.state_dict()) == set(names)
    calls = []
    model.attn.register_forward_hook(lambda *_: calls.append(1))
    model.logits(torch.randint(0, 64, (1, 8)))
    assert len(calls) == 2


def test_default_model_is_the_34m_gdn_hybrid():
    cfg = train_gpt.Hyperparameters().model_config()
    with torch.device("meta"):
        model = train_gpt.GDNHybrid(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert model.layout == ["gdn"] * 5 + ["swa"] + ["gdn"] * 5 + ["swa"]
    assert 32e6 < n < 36e6, n


def test_untrained_model_predicts_near_uniform():
    torch.manual_seed(0)
    model = train_gpt.GDNHybrid(TINY_MODEL)
    ids = torch.randint(0, 64, (2, 32))
    nll = model(ids, torch.randint(0, 64, (2, 32)))
    assert nll.shape == (2, 32) and abs(nll.mean().item() - math.log(TINY_MODEL["vocab_size"])) < 0.05
