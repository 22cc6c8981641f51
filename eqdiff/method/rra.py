"""RRA: residual reference attention (paper §4.3, Eq. 8-10; docs/method.md, RRA), its losses, and the cross-attention
K/V.

Everything enters the UNet through attention processors installed with ``unet.set_attn_processor``:

* ``ReferenceBank`` — one explicit, typed object per call. In ``WRITE`` mode (the reference pass: the same UNet,
  stock behaviour everywhere) each mid+up self-attention layer stores the hidden states entering it (the block's
  norm1 output, F^r). In ``READ`` mode (the main pass) the RRA layers read them; reading an unfilled bank raises.
  ``OFF`` = no reference (plain Custom Diffusion + injected text). It also collects the attention maps L_ra and
  L_ca need, on their 1/32-resolution layers only.
* ``RRAAttnProcessor`` (mid+up ``attn1``): SA = attn(q, W_k x, W_v x); RA = attn(q, W_k^res F^r, W_v^res F^r);
  out = H_r([RA ; SA]) with H_r: Linear(2d → d+1) zero-initialised; F_RA = out[..., :d],
  M^f = clamp(out[..., d], 0, 1); result = W_o(SA) ⊙ (1 − M^f) + F_RA ⊙ M^f. At init it equals the stock output
  bit for bit. (The official code also detaches spatial token 0's K/V here, a Custom-Diffusion leftover that only
  changes gradients; we do not.)
* ``CustomDiffusionAttnProcessor`` (every ``attn2``): trainable K/V initialised from the frozen ones, the key and
  value of text token 0 detached (Custom Diffusion); stock K/V in the reference pass.

Trainable parameters carry the suffixes ``_custom_diffusion`` and ``_res``, so selecting, saving and loading
them is a name filter (``trainable_state_dict``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

TRAINABLE_SUFFIXES = ("_custom_diffusion", "_res")
RRA_PREFIXES = ("mid_block.", "up_blocks.")
LOSS_BLOCK_RA = ("up_blocks.1.",)
"""L_ra layers: the up block at 1/32 of the image side (16×16 at 512 px; official ``up_blocks.1``)."""
LOSS_BLOCKS_CA = ("down_blocks.2.", "up_blocks.1.")
"""L_ca layers: the cross-attention at 1/32 of the image side in down_blocks.2 and up_blocks.1 (official)."""


class BankMode(enum.Enum):
    OFF = "off"
    WRITE = "write"
    READ = "read"
    FUSED = "fused"
    """One UNet call on [reference rows; main rows]: the first ``reference_rows`` rows run stock and feed F^r to
    the rest (inference fast path: one launch-bound call instead of two)."""


@dataclass
class ReferenceBank:
    """Per-call reference features and recorded attention maps, filled by the pipeline, read by processors."""

    mode: BankMode = BankMode.OFF
    record_maps: bool = False
    """Record L_ra / L_ca maps during READ/OFF passes (training only)."""
    reference_rows: int = 0
    """In FUSED mode: how many leading rows are reference rows."""
    reference_index: torch.Tensor | None = None
    """Main row i reads reference row ``reference_index[i]`` (a device tensor). None: row for row, as many
    reference rows as main rows. Lets a batch whose images share a reference row compute it once (inference)."""
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    prefix: dict[str, torch.Tensor] = field(default_factory=dict)
    """layer -> (R0, N, d) reference rows computed earlier (the inference cache of the unconditional row), placed
    before this call's own reference rows: ``reference_index`` counts them first."""
    reference_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    """layer -> (B, heads, N, N_ref) reference-attention probabilities."""
    cross_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    """layer -> (B, heads, N, L) cross-attention probabilities."""
    record_gates: bool = False
    """Record, per RRA layer, whether its gate is open (training: the logged ``rra/gates_open`` count)."""
    gate_open: dict[str, torch.Tensor] = field(default_factory=dict)
    """layer -> () bool: some query token has a gate pre-activation >= 0. A closed layer has M^f = 0 everywhere,
    ignores the reference and passes no gradient to its gate row (the clamp is flat below 0)."""

    def write(self, layer: str, hidden_states: torch.Tensor) -> None:
        self.features[layer] = hidden_states

    def read(self, layer: str, batch_size: int) -> torch.Tensor:
        if layer not in self.features:
            raise RuntimeError(f"reference features for {layer} were not written: run the reference pass first")
        features = self.with_prefix(layer, self.features[layer])
        self.check_rows(layer, features.shape[0], batch_size)
        return features

    def with_prefix(self, layer: str, features: torch.Tensor) -> torch.Tensor:
        """This call's reference rows of ``layer`` after the cached ``prefix`` rows, if any."""
        cached = self.prefix.get(layer)
        return features if cached is None else torch.cat([cached.to(features.dtype), features])

    def check_rows(self, layer: str, reference_rows: int, main_rows: int) -> None:
        expected = main_rows if self.reference_index is None else len(self.reference_index)
        if expected != main_rows:
            raise RuntimeError(f"{layer}: a reference index for {expected} rows, but the batch has {main_rows}")
        if self.reference_index is None and reference_rows != main_rows:
            raise RuntimeError(f"{layer}: {reference_rows} reference rows for a batch of {main_rows}")

    def gather(self, reference: torch.Tensor) -> torch.Tensor:
        """Rows of a per-reference-row tensor (features, keys, values), one per main row."""
        return reference if self.reference_index is None else reference.index_select(0, self.reference_index)

    def clear(self) -> None:
        """Drop features and maps and return to OFF (call after backward: checkpointing recomputes READ passes)."""
        self.mode, self.record_maps, self.reference_index = BankMode.OFF, False, None
        self.record_gates = False
        self.gate_open.clear()
        self.features.clear()
        self.prefix = {}
        self.reference_maps.clear()
        self.cross_maps.clear()


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, channels = x.shape
    return x.view(batch, tokens, heads, channels // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, explicit: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head attention on (B, heads, N, d_h) tensors; explicit probabilities only when asked for.

    The explicit path runs in fp32 even under autocast (which would otherwise cast its matmuls to half
    precision): the losses read these probabilities."""
    if not explicit:
        return F.scaled_dot_product_attention(query, key, value), None
    with torch.autocast(query.device.type, enabled=False):
        scores = query.float() @ key.float().transpose(-1, -2) / math.sqrt(query.shape[-1])
        probs = scores.softmax(dim=-1)
        return (probs @ value.float()).to(query.dtype), probs


class _GateClamp(torch.autograd.Function):
    """clamp(x, 0, 1) whose gradient passes where 0 <= x <= 1, boundaries included.

    The official M^f = clamp(out[..., d], 0, 1) learns only because torch 2.0's clamp passed gradient at exactly
    0 (docs/official-code.md §8.2): H_r is zero-initialised, so every gate starts at 0. Current torch returns
    a zero gradient at the boundary, which would leave every gate at 0 forever (RRA never switches on). This
    keeps the behaviour the method was trained with, on any torch version.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * ((x >= 0) & (x <= 1)).to(grad.dtype)


def gate_clamp(x: torch.Tensor) -> torch.Tensor:
    """M^f = clamp(x, 0, 1) with gradient at the boundaries (see ``_GateClamp``)."""
    return _GateClamp.apply(x)


def _check_sd_attention(attn: Attention, name: str) -> None:
    stock = attn.group_norm is None and attn.spatial_norm is None and not attn.residual_connection
    if not stock or attn.rescale_output_factor != 1.0 or attn.norm_q is not None or attn.norm_cross:
        raise ValueError(f"{name}: not an SD v1.x transformer attention layer; EqDiff processors do not apply")


class CustomDiffusionAttnProcessor(nn.Module):
    """Cross-attention with trainable K/V (Custom Diffusion), stock K/V during the reference pass."""

    def __init__(self, attn: Attention, name: str, bank: ReferenceBank, dtype: torch.dtype = torch.float32):
        super().__init__()
        _check_sd_attention(attn, name)
        self.name, self.bank = name, bank
        self.record = name.startswith(LOSS_BLOCKS_CA)
        factory = {"device": attn.to_k.weight.device, "dtype": dtype}  # built where the UNet lives
        self.to_k_custom_diffusion = nn.Linear(attn.to_k.in_features, attn.to_k.out_features, bias=False, **factory)
        self.to_v_custom_diffusion = nn.Linear(attn.to_v.in_features, attn.to_v.out_features, bias=False, **factory)
        with torch.no_grad():
            self.to_k_custom_diffusion.weight.copy_(attn.to_k.weight)
            self.to_v_custom_diffusion.weight.copy_(attn.to_v.weight)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask=None,
        temb=None,
        **kwargs,
    ) -> torch.Tensor:
        assert encoder_hidden_states is not None and attention_mask is None
        query = attn.to_q(hidden_states)
        mode = self.bank.mode
        if mode == BankMode.WRITE:
            key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        elif mode == BankMode.FUSED:  # stock K/V for the reference rows, the trained ones for the rest
            rows = self.bank.reference_rows
            reference, main = encoder_hidden_states[:rows], encoder_hidden_states[rows:]
            custom_key, custom_value = self._custom_key_value(main, query.dtype)
            key = torch.cat([attn.to_k(reference), custom_key])
            value = torch.cat([attn.to_v(reference), custom_value])
        else:
            key, value = self._custom_key_value(encoder_hidden_states, query.dtype)
        explicit = self.record and self.bank.record_maps and self.bank.mode != BankMode.WRITE
        out, probs = _attend(
            _split_heads(query, attn.heads),
            _split_heads(key, attn.heads),
            _split_heads(value, attn.heads),
            explicit,
        )
        if probs is not None:
            self.bank.cross_maps[self.name] = probs
        return attn.to_out[1](attn.to_out[0](_merge_heads(out)))

    def _custom_key_value(self, context: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        weight_dtype = self.to_k_custom_diffusion.weight.dtype
        context = context.to(weight_dtype)
        key = self.to_k_custom_diffusion(context).to(dtype)
        value = self.to_v_custom_diffusion(context).to(dtype)
        # Custom Diffusion: no gradient through the BOS token's key/value (it dominates attention mass).
        detach = torch.ones_like(key)
        detach[:, :1] = 0.0
        return detach * key + (1 - detach) * key.detach(), detach * value + (1 - detach) * value.detach()


class RRAAttnProcessor(nn.Module):
    """Residual reference attention on a mid/up self-attention layer (Eq. 8-9)."""

    def __init__(self, attn: Attention, name: str, bank: ReferenceBank, dtype: torch.dtype = torch.float32):
        super().__init__()
        _check_sd_attention(attn, name)
        self.name, self.bank = name, bank
        self.record = name.startswith(LOSS_BLOCK_RA)
        dim = attn.to_q.out_features
        factory = {"device": attn.to_k.weight.device, "dtype": dtype}  # built where the UNet lives
        self.to_k_res = nn.Linear(attn.to_k.in_features, dim, bias=False, **factory)
        self.to_v_res = nn.Linear(attn.to_v.in_features, dim, bias=False, **factory)
        self.to_out_res = nn.Linear(2 * dim, dim + 1, **factory)  # H_r
        with torch.no_grad():
            self.to_k_res.weight.copy_(attn.to_k.weight)
            self.to_v_res.weight.copy_(attn.to_v.weight)
            self.to_out_res.weight.zero_()
            self.to_out_res.bias.zero_()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask=None,
        temb=None,
        **kwargs,
    ) -> torch.Tensor:
        assert encoder_hidden_states is None and attention_mask is None
        if self.bank.mode == BankMode.WRITE:
            self.bank.write(self.name, hidden_states)
        heads = attn.heads
        query = _split_heads(attn.to_q(hidden_states), heads)
        key = _split_heads(attn.to_k(hidden_states), heads)
        value = _split_heads(attn.to_v(hidden_states), heads)
        self_attention = _merge_heads(F.scaled_dot_product_attention(query, key, value))
        stock_output = attn.to_out[1](attn.to_out[0](self_attention))  # F^g_SA = W_o(SA)
        if self.bank.mode == BankMode.READ:
            reference = self.bank.read(self.name, hidden_states.shape[0])
            return self._residual(query, self_attention, stock_output, reference)
        if self.bank.mode == BankMode.FUSED:
            rows = self.bank.reference_rows
            reference = self.bank.with_prefix(self.name, hidden_states[:rows])
            self.bank.check_rows(self.name, reference.shape[0], hidden_states.shape[0] - rows)
            main = self._residual(query[rows:], self_attention[rows:], stock_output[rows:], reference)
            return torch.cat([stock_output[:rows], main])
        return stock_output

    def _residual(
        self, query: torch.Tensor, self_attention: torch.Tensor, stock_output: torch.Tensor, reference: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 8-9 for rows whose reference features are ``reference`` (R, N_ref, d); the bank maps rows to
        reference rows, so a shared reference row is projected once."""
        heads = query.shape[1]
        weight_dtype = self.to_k_res.weight.dtype
        reference = reference.to(weight_dtype)
        ref_key = _split_heads(self.bank.gather(self.to_k_res(reference)).to(query.dtype), heads)
        ref_value = _split_heads(self.bank.gather(self.to_v_res(reference)).to(query.dtype), heads)
        explicit = self.record and self.bank.record_maps
        reference_attention, probs = _attend(query, ref_key, ref_value, explicit)
        if probs is not None:
            self.bank.reference_maps[self.name] = probs
        fused = self.to_out_res(
            torch.cat([_merge_heads(reference_attention), self_attention], dim=-1).to(weight_dtype)
        ).to(stock_output.dtype)
        dim = stock_output.shape[-1]
        f_ra, gate = fused[..., :dim], gate_clamp(fused[..., dim:])  # F_RA and M^f
        if self.bank.record_gates:
            self.bank.gate_open[self.name] = (fused[..., dim:] >= 0).any().detach()
        return stock_output * (1.0 - gate) + f_ra * gate


def install_processors(
    unet: UNet2DConditionModel, bank: ReferenceBank, rra: bool, dtype: torch.dtype = torch.float32
) -> None:
    """Install Custom Diffusion K/V on all cross-attention layers and, if ``rra``, RRA on mid+up self-attention.

    Down-block self-attention keeps the stock SDPA processor (no RRA modules are built there: the official
    down-block modules are trained but never used).
    """
    modules = dict(unet.named_modules())
    processors: dict[str, nn.Module | AttnProcessor2_0] = {}
    for name in unet.attn_processors:
        attn = modules[name.removesuffix(".processor")]
        if name.endswith("attn2.processor"):
            processors[name] = CustomDiffusionAttnProcessor(attn, name, bank, dtype)
        elif rra and name.startswith(RRA_PREFIXES):
            processors[name] = RRAAttnProcessor(attn, name, bank, dtype)
        else:
            processors[name] = AttnProcessor2_0()
    unet.set_attn_processor(processors)


def trainable_state_dict(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """The processors' trainable tensors, keyed by their UNet parameter names."""
    return {name: p for name, p in unet.named_parameters() if any(s in name for s in TRAINABLE_SUFFIXES)}


# ----------------------------------------------------------------------------------------------------------
# Losses on the recorded maps (docs/method.md, RRA).


def _grid_mask(mask: torch.Tensor, tokens: int) -> torch.Tensor:
    """(B, 1, H, W) {0,1} mask -> (B, tokens) nearest-resized to the square map grid."""
    side = math.isqrt(tokens)
    assert side * side == tokens, "attention maps are expected on a square latent grid"
    return F.interpolate(mask.float(), size=(side, side), mode="nearest").flatten(1)


def _on_finest_grid(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """(B, heads, N_i, L) attention maps on square grids -> all on the finest grid (bilinear along the query
    grid: every row stays a distribution over L). SD v1.x's L_ca layers share one grid (nothing changes); the
    world model's sit at 4 x 4 and 8 x 8 (docs/world.md, Base model)."""
    tokens = max(m.shape[2] for m in maps)
    side = math.isqrt(tokens)
    out = []
    for m in maps:
        if m.shape[2] != tokens:
            b, h, n, length = m.shape
            grid = m.reshape(b * h, math.isqrt(n), math.isqrt(n), length).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
            m = grid.permute(0, 2, 3, 1).reshape(b, h, tokens, length)
        out.append(m)
    return out


def reference_attention_loss(
    bank: ReferenceBank, rows: slice, target_masks: torch.Tensor, reference_masks: torch.Tensor
) -> torch.Tensor:
    """L_ra: S(p) = Σ_j A(p, j)·M^r(j); mean_p (M^g(p)·S(p) − M^g(p))², averaged over the instance rows.

    A = reference-attention probabilities averaged over the recorded layers and heads. Masks are the raw
    (undilated) binarised masks, (B_inst, 1, H, W).
    """
    maps = torch.stack([m[rows] for m in bank.reference_maps.values()]).mean(dim=(0, 2))  # (B, N, N_ref)
    m_g = _grid_mask(target_masks, maps.shape[1])
    m_r = _grid_mask(reference_masks, maps.shape[2])
    s = torch.einsum("bpj,bj->bp", maps, m_r)
    return ((m_g * s - m_g) ** 2).mean()


def cross_attention_loss(
    bank: ReferenceBank, rows: slice, token_positions: torch.Tensor, target_masks: torch.Tensor
) -> torch.Tensor:
    """L_ca: the placeholder's cross-attention map (mean over layers and heads) over its max vs. the mask."""
    maps = torch.stack(_on_finest_grid([m[rows] for m in bank.cross_maps.values()])).mean(dim=(0, 2))  # (B, N, L)
    index = token_positions.to(maps.device).view(-1, 1, 1).expand(-1, maps.shape[1], 1)
    a = maps.gather(2, index).squeeze(2)
    a = a / a.amax(dim=1, keepdim=True).clamp_min(1e-12)
    m_g = _grid_mask(target_masks, maps.shape[1])
    return ((m_g - a) ** 2).mean()
