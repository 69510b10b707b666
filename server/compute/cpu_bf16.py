"""The bfloat16 path on CPU: oneDNN-packed bfloat16 GEMMs around a float32 residual stream.

Casting a model to bfloat16 and running it eagerly (``model.to(torch.bfloat16)``) is about 1.9x
float32 on a CPU with AVX512-BF16, but it loses accuracy where it is cheap to keep it: the residual
stream, rounded to 8 bits of mantissa after every sublayer, drifts (a random-weight bge-m3 of 12
layers lands at cosine 0.998 against float32, and SenseVoice's bfloat16 positional encoding cannot
count past 256 frames). With the stream kept in float32 the cosine is 0.99998, as good as rounding
the weights alone, and the packed kernels below make it slightly faster too (about 2.05x float32;
scripts/bench_dtype.py). The ceiling is the GEMM: bfloat16 dot products do twice the work of float32
FMAs per instruction (without AMX), 2.0-2.4x measured, and attention does not gain at all.

So on CPU in bfloat16 the adapters run the encoder layers here instead:

* every large linear layer is a ``PackedLinear``: its weight is reordered once, at load, into
  oneDNN's layout (``mkldnn._reorder_linear_weight``) and it runs ``mkldnn._linear_pointwise``,
  with the bias, and GELU/ReLU where the layer has one, fused into the GEMM (``addmm`` first
  copies the bias into its output, and works from an unpacked weight);
* query, key and value are one GEMM; attention is ``scaled_dot_product_attention`` (the CPU flash
  kernel) with a key-padding mask;
* the residual stream, the LayerNorms and the model's output stay float32; only GEMM inputs
  and outputs (and attention) are bfloat16, and the small output heads run in float32.

Weights are held once, in bfloat16 (the packed copies replace the modules' own): half the memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_mkldnn = torch.ops.mkldnn


def fast_path(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this device and dtype run the packed bfloat16 layers (oneDNN must support bf16)."""
    return (
        device.type == "cpu"
        and dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


class PackedLinear(nn.Module):
    """``act(x @ W.T + b)`` (or ``x @ W.T + b + residual``) with W pre-packed for oneDNN, in
    ``dtype`` (bfloat16; float32 only to measure what packing alone gains)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act: str = "none",
                 dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        weight = weight.detach().to(dtype).contiguous()
        self.out_features, self.in_features = weight.shape
        # Not a parameter: a packed oneDNN tensor has no strides and no state_dict form.
        self.packed = _mkldnn._reorder_linear_weight(weight, None)
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype).clone())
        # oneDNN's "gelu" with algorithm "none" is the exact (erf) GELU, as nn.GELU() and HF's "gelu".
        self.act, self.algorithm = act, ("none" if act == "gelu" else "")

    @classmethod
    def of(cls, linear: nn.Linear, act: str = "none", dtype: torch.dtype = torch.bfloat16) -> PackedLinear:
        return cls(linear.weight, linear.bias, act, dtype)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if residual is not None:
            return _mkldnn._linear_pointwise(x, residual, self.packed, self.bias, "add")
        return _mkldnn._linear_pointwise(x, self.packed, self.bias, self.act, [], self.algorithm)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, act={self.act}"


def _float_layer_norm(norm: nn.LayerNorm) -> nn.LayerNorm:
    """A float32 copy of a LayerNorm (its parameters may have been cast to bfloat16)."""
    copy = nn.LayerNorm(norm.normalized_shape, eps=norm.eps)
    with torch.no_grad():
        copy.weight.copy_(norm.weight.float())
        copy.bias.copy_(norm.bias.float())
    return copy.eval()


def key_padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """(batch, 1, 1, keys) additive mask for SDPA, or None when nothing is padded."""
    if bool(attention_mask.all()):
        return None
    mask = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill_(attention_mask == 0, float("-inf"))[:, None, None, :]


# ---- XLM-RoBERTa (bge-m3, bge-reranker-v2-m3) --------------------------------------------------------


class _XlmrLayer(nn.Module):
    def __init__(self, layer, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        attn = layer.attention.self
        if getattr(attn, "position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        self.heads, self.head_size = attn.num_attention_heads, attn.attention_head_size
        self.qkv = PackedLinear(torch.cat([attn.query.weight, attn.key.weight, attn.value.weight]),
                                torch.cat([attn.query.bias, attn.key.bias, attn.value.bias]), dtype=dtype)
        self.attn_out = PackedLinear.of(layer.attention.output.dense, dtype=dtype)
        self.norm1 = _float_layer_norm(layer.attention.output.LayerNorm)
        act = layer.intermediate.intermediate_act_fn
        if not (isinstance(act, nn.GELU) or type(act).__name__ == "GELUActivation") or \
                getattr(act, "approximate", "none") != "none":
            raise ValueError(f"unsupported activation {act!r}")
        self.ffn_in = PackedLinear.of(layer.intermediate.dense, act="gelu", dtype=dtype)
        self.ffn_out = PackedLinear.of(layer.output.dense, dtype=dtype)
        self.norm2 = _float_layer_norm(layer.output.LayerNorm)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``h``: the float32 residual stream (batch, tokens, hidden)."""
        batch, tokens, hidden = h.shape
        x = h.to(self.dtype)
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, self.head_size).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        a = a.transpose(1, 2).reshape(batch, tokens, hidden)
        # (h + y.float(), not h + y: a mixed-dtype add goes through a slow promoting loop.)
        h = self.norm1(h + self.attn_out(a).float())
        x = h.to(self.dtype)
        return self.norm2(h + self.ffn_out(self.ffn_in(x)).float())


class XlmrEncoder(nn.Module):
    """Drop-in for ``XLMRobertaModel`` in inference: same arguments, same ``last_hidden_state``
    (float32), computed with packed bfloat16 GEMMs. No ``pooler_output``: neither FlagEmbedding's
    bge-m3 nor the sequence-classification head reads it."""

    def __init__(self, model, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.config = model.config
        self.dtype = dtype
        emb = model.embeddings
        # The tables stay in `dtype` (half the memory in bfloat16); their sum and LayerNorm are float32.
        self.word_embeddings = emb.word_embeddings.to(dtype)
        self.position_embeddings = emb.position_embeddings.to(dtype)
        self.token_type_embeddings = emb.token_type_embeddings.to(dtype)
        self.embed_norm = _float_layer_norm(emb.LayerNorm)
        self.padding_idx = emb.padding_idx
        self.layers = nn.ModuleList(_XlmrLayer(layer, dtype) for layer in model.encoder.layer)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_dict: bool = True,
                **unused):
        from transformers.modeling_outputs import BaseModelOutput

        unsupported = sorted(name for name, value in unused.items() if value is not None and value is not False)
        if unsupported:  # token types, positions, head masks, attentions, hidden states
            raise ValueError(f"XlmrEncoder does not support {unsupported}")
        # XLM-R's positions count non-pad tokens from padding_idx + 1 (create_position_ids_from_input_ids).
        not_pad = input_ids.ne(self.padding_idx).int()
        positions = (torch.cumsum(not_pad, dim=1) * not_pad).long() + self.padding_idx
        h = self.word_embeddings(input_ids).float()
        h += self.position_embeddings(positions).float()
        h += self.token_type_embeddings.weight[0].float()
        h = self.embed_norm(h)
        mask = key_padding_mask(attention_mask, self.dtype)
        for layer in self.layers:
            h = layer(h, mask)
        return BaseModelOutput(last_hidden_state=h)


# ---- SenseVoiceSmall's SANM encoder --------------------------------------------------------------------


class _SanmLayer(nn.Module):
    """funasr's ``EncoderLayerSANM`` (pre-norm) with ``MultiHeadedAttentionSANM``: self-attention
    plus an FSMN memory (a depthwise convolution over the values) and a ReLU feed-forward."""

    def __init__(self, layer, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        if not layer.normalize_before or layer.concat_after:
            raise ValueError("only pre-norm SANM layers without concat_after are supported")
        attn, ff = layer.self_attn, layer.feed_forward
        if not isinstance(ff.activation, nn.ReLU):
            raise ValueError(f"unsupported activation {ff.activation!r}")
        self.residual = layer.in_size == layer.size
        self.heads, self.head_size = attn.h, attn.d_k
        self.norm1 = _float_layer_norm(layer.norm1)
        self.qkv = PackedLinear.of(attn.linear_q_k_v, dtype=dtype)
        # The FSMN is a depthwise convolution: oneDNN's bfloat16 kernel for it is slower than float32.
        self.fsmn = nn.Conv1d(attn.fsmn_block.in_channels, attn.fsmn_block.out_channels,
                              attn.fsmn_block.kernel_size, groups=attn.fsmn_block.groups, bias=False)
        with torch.no_grad():
            self.fsmn.weight.copy_(attn.fsmn_block.weight.float())
        self.fsmn_pad = tuple(attn.pad_fn.padding)
        self.attn_out = PackedLinear.of(attn.linear_out, dtype=dtype)
        self.norm2 = _float_layer_norm(layer.norm2)
        self.ffn_in = PackedLinear.of(ff.w_1, act="relu", dtype=dtype)
        self.ffn_out = PackedLinear.of(ff.w_2, dtype=dtype)

    def forward(self, h: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``h``: float32 (batch, frames, features); ``keep``: float32 (batch, frames, 1) 0/1;
        ``mask``: the additive key-padding mask for SDPA, or None."""
        batch, frames, _ = h.shape
        size = self.heads * self.head_size
        qkv = self.qkv(self.norm1(h).to(self.dtype))
        q, k, v = qkv.view(batch, frames, 3, self.heads, self.head_size).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale 1/sqrt(d_k), as SANM
        a = self.attn_out(a.transpose(1, 2).reshape(batch, frames, size)).float()
        values = qkv[..., 2 * size:].float() * keep
        memory = self.fsmn(F.pad(values.transpose(1, 2), self.fsmn_pad)).transpose(1, 2)
        a += (memory + values) * keep
        h = h + a if self.residual else a
        return h + self.ffn_out(self.ffn_in(self.norm2(h).to(self.dtype))).float()


class SanmEncoder(nn.Module):
    """Drop-in for funasr's ``SenseVoiceEncoderSmall.forward(xs_pad, ilens) -> (out, olens)``:
    float32 in and out, packed bfloat16 GEMMs inside."""

    def __init__(self, encoder, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.dtype = dtype
        self.scale = encoder.output_size() ** 0.5
        self.blocks = nn.ModuleList(_SanmLayer(layer, dtype) for layer in [*encoder.encoders0, *encoder.encoders])
        self.after_norm = _float_layer_norm(encoder.after_norm)
        self.tp_blocks = nn.ModuleList(_SanmLayer(layer, dtype) for layer in encoder.tp_encoders)
        self.tp_norm = _float_layer_norm(encoder.tp_norm)
        self._output_size = encoder.output_size()

    def output_size(self) -> int:
        return self._output_size

    @staticmethod
    def positions(frames: int, depth: int, device: torch.device) -> torch.Tensor:
        """funasr's SinusoidalPositionEncoder, always in float32 (positions past 256 are not
        integers in bfloat16)."""
        position = torch.arange(1, frames + 1, device=device, dtype=torch.float32)[:, None]
        increment = torch.log(torch.tensor(10000.0, device=device)) / (depth / 2 - 1)
        inv_timescales = torch.exp(torch.arange(depth // 2, device=device, dtype=torch.float32) * -increment)
        scaled = position * inv_timescales[None]
        return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)

    def forward(self, xs_pad: torch.Tensor, ilens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames, depth = xs_pad.shape[1:]
        present = torch.arange(frames, device=xs_pad.device)[None] < ilens[:, None]  # (batch, frames)
        keep = present.float()[:, :, None]
        mask = None
        if not bool(present.all()):
            mask = torch.zeros(present.shape, dtype=self.dtype, device=xs_pad.device)
            mask = mask.masked_fill_(~present, float("-inf"))[:, None, None, :]
        h = xs_pad.float() * self.scale + self.positions(frames, depth, xs_pad.device)
        for block in self.blocks:
            h = block(h, keep, mask)
        h = self.after_norm(h)
        for block in self.tp_blocks:
            h = block(h, keep, mask)
        return self.tp_norm(h), present.sum(1).int()
