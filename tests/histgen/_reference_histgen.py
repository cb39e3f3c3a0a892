"""Minimal port of HistGen's forward path and beam search, for parity tests only.

Ported from dddavid4real/HistGen (commit 9e390ed / 31a40af; Apache License 2.0,
Copyright the HistGen authors): ``models/histgen_model.py``, ``modules/histgen_module.py``,
``modules/att_model.py`` and ``modules/caption_model.py`` (the latter two derived from
ruotianluo/ImageCaptioning.pytorch and zhjohnchan/R2GenCMN, MIT / Apache-2.0).

Changes from upstream, none affecting the numbers: plain CPU torch (``.cuda()`` calls
removed), no ResNet (``visual_extractor`` is a one-parameter stub so its keys exist in the
state dict), no tokenizer object (``vocab_size`` is passed), only the code paths used by
HistGen's training forward and beam-search sampling, group size 1.
"""

import copy
import math
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def clones(module, n):
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


def subsequent_mask(size):
    attn_shape = (1, size, size)
    mask = np.triu(np.ones(attn_shape), k=1).astype("uint8")
    return torch.from_numpy(mask) == 0


def attention(query, key, value, mask=None, dropout=None):
    d_k = query.size(-1)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    p_attn = F.softmax(scores, dim=-1)
    if dropout is not None:
        p_attn = dropout(p_attn)
    return torch.matmul(p_attn, value), p_attn


def memory_querying_responding(query, key, value, mask=None, dropout=None, topk=32):
    d_k = query.size(-1)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    selected_scores, idx = scores.topk(topk)
    dummy_value = value.unsqueeze(2).expand(idx.size(0), idx.size(1), idx.size(2), value.size(-2), value.size(-1))
    dummy_idx = idx.unsqueeze(-1).expand(idx.size(0), idx.size(1), idx.size(2), idx.size(3), value.size(-1))
    selected_value = torch.gather(dummy_value, 3, dummy_idx)
    p_attn = F.softmax(selected_scores, dim=-1)
    if dropout is not None:
        p_attn = dropout(p_attn)
    return torch.matmul(p_attn.unsqueeze(3), selected_value).squeeze(3), p_attn


class LayerNorm(nn.Module):
    def __init__(self, features, eps=1e-6):
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class SublayerConnection(nn.Module):
    def __init__(self, size, dropout):
        super().__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, sublayer):
        _x = sublayer(self.norm(x))
        if type(_x) is tuple:
            return x + self.dropout(_x[0]), _x[1]
        return x + self.dropout(_x)


class _Attn(nn.Module):
    """Shared body of MultiHeadedAttention / MultiThreadMemory (upstream duplicates it)."""

    def __init__(self, h, d_model, dropout=0.1):
        super().__init__()
        self.d_k = d_model // h
        self.h = h
        self.linears = clones(nn.Linear(d_model, d_model), 4)
        self.attn = None
        self.dropout = nn.Dropout(p=dropout)

    def _core(self, query, key, value, mask):
        raise NotImplementedError

    def forward(self, query, key, value, mask=None, layer_past=None):
        if mask is not None:
            mask = mask.unsqueeze(1)
        nbatches = query.size(0)
        if layer_past is not None and layer_past.shape[2] == key.shape[1] > 1:
            query = self.linears[0](query)
            key, value = layer_past[0], layer_past[1]
            present = torch.stack([key, value])
        else:
            query, key, value = [lin(x) for lin, x in zip(self.linears, (query, key, value))]
        if layer_past is not None and not (layer_past.shape[2] == key.shape[1] > 1):
            past_key, past_value = layer_past[0], layer_past[1]
            key = torch.cat((past_key, key), dim=1)
            value = torch.cat((past_value, value), dim=1)
            present = torch.stack([key, value])
        query, key, value = [x.view(nbatches, -1, self.h, self.d_k).transpose(1, 2) for x in [query, key, value]]
        x, self.attn = self._core(query, key, value, mask)
        x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
        if layer_past is not None:
            return self.linears[-1](x), present
        return self.linears[-1](x)


class MultiHeadedAttention(_Attn):
    def _core(self, query, key, value, mask):
        return attention(query, key, value, mask=mask, dropout=self.dropout)


class MultiThreadMemory(_Attn):
    def __init__(self, h, d_model, dropout=0.1, topk=32):
        super().__init__(h, d_model, dropout)
        self.topk = topk

    def _core(self, query, key, value, mask):
        return memory_querying_responding(query, key, value, mask=mask, dropout=self.dropout, topk=self.topk)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.1):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class Embeddings(nn.Module):
    def __init__(self, d_model, vocab):
        super().__init__()
        self.lut = nn.Embedding(vocab, d_model)
        self.d_model = d_model

    def forward(self, x):
        return self.lut(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, dropout, max_len=70000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len).unsqueeze(1).float()
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.size(1)])


def transform_tokens2regions(hidden_states, num_regions, region_size):
    patch = torch.reshape(hidden_states, (hidden_states.size(0), num_regions, region_size, hidden_states.size(-1)))
    return patch.contiguous().view(hidden_states.size(0) * num_regions, region_size, patch.size(-1))


def transform_masks2regions(mask, num_regions, region_size):
    patch_mask = torch.reshape(mask, (mask.size(0), num_regions, region_size))
    return patch_mask.contiguous().view(mask.size(0) * num_regions, 1, region_size)


class TransformerLayer(nn.Module):
    def __init__(self, size, self_attn, feed_forward, dropout):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 2)
        self.size = size

    def forward(self, x, mask):
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, mask))
        return self.sublayer[1](x, self.feed_forward)


class HATLayer(nn.Module):
    def __init__(self, heads=8, d_model=512, d_ff=512, region_size=256, use_region_encoder=True,
                 use_WSI_encoder=False, dropout=0.1, max_patch=100000, first_layer=False):
        super().__init__()
        self.region_size = region_size
        self.max_region = int(np.ceil(max_patch / region_size))
        self.first_layer = first_layer
        self.d_model = d_model
        self.global_token = nn.Parameter(torch.randn(1, 1, d_model))
        self.region_position_embeddings = PositionalEncoding(d_model, dropout, max_len=100000)
        self.use_region_encoder = use_region_encoder
        self.use_WSI_encoder = use_WSI_encoder
        self.attn = MultiHeadedAttention(heads, d_model, dropout)
        self.ff = PositionwiseFeedForward(d_model, d_ff, dropout)
        c = copy.deepcopy
        if use_region_encoder:
            self.region_encoder = TransformerLayer(d_model, c(self.attn), c(self.ff), dropout)
        if use_WSI_encoder:
            self.WSI_encoder = TransformerLayer(d_model, c(self.attn), c(self.ff), dropout)
            self.position_embeddings = nn.Embedding(self.max_region + 1, d_model, padding_idx=0)

    def forward(self, x, mask, num_regions):
        if self.first_layer:
            x, mask = self.interpolate_global_token(x, mask)
        region_inputs = transform_tokens2regions(x, num_regions, self.region_size)
        region_masks = transform_masks2regions(mask, num_regions, self.region_size)
        region_inputs = self.region_position_embeddings(region_inputs)
        outputs = self.region_encoder(region_inputs, region_masks)
        if self.use_WSI_encoder:
            region_global_tokens = outputs[:, :: self.region_size].clone()
            region_attention_mask = mask[:, :, :: self.region_size].clone()
            region_global_tokens = region_global_tokens.view(1, region_global_tokens.size(0), region_global_tokens.size(2))
            region_global_tokens = self.region_position_embeddings(region_global_tokens)
            wsi_outputs = self.WSI_encoder(region_global_tokens, region_attention_mask)
            wsi_outputs = wsi_outputs.view(wsi_outputs.size(1), 1, wsi_outputs.size(2))
            outputs[:, :: self.region_size] = wsi_outputs
        outputs = outputs.view(x.size(0), num_regions * self.region_size, outputs.size(-1))
        return outputs, mask

    def interpolate_global_token(self, hidden_states, mask):
        batch_size, seq_len, hidden_dim = hidden_states.size()
        num_regions = int(np.ceil(seq_len / (self.region_size - 1)))
        total_size = num_regions * self.region_size
        padding_size = total_size - seq_len - num_regions
        if padding_size > 0:
            hidden_states = torch.cat([hidden_states, torch.zeros(batch_size, padding_size, hidden_dim)], dim=1)
            mask = torch.cat([mask, torch.zeros(batch_size, 1, padding_size)], dim=2)
        global_token = self.global_token.repeat(batch_size, num_regions, 1)
        hs = torch.cat([hidden_states.view(batch_size, num_regions, self.region_size - 1, hidden_dim),
                        global_token.unsqueeze(2)], dim=2)
        hs = hs.view(batch_size, num_regions * self.region_size, hidden_dim)
        gmask = torch.ones(batch_size, 1, num_regions, 1)
        mask = torch.cat([mask.view(batch_size, 1, num_regions, self.region_size - 1), gmask], dim=3)
        return hs, mask.view(batch_size, 1, num_regions * self.region_size)


class AttentivePooling(nn.Module):
    def __init__(self, layout):
        super().__init__()
        self.lin_proj = nn.Linear(layout["d_model"], layout["d_model"])
        self.v = nn.Linear(layout["d_model"], 1, bias=False)

    def forward(self, inputs):
        w = torch.tanh(self.v(self.lin_proj(inputs))).squeeze(-1)
        return torch.sum(torch.softmax(w, -1).unsqueeze(-1) * inputs, 1)


class HATPooler(nn.Module):
    def __init__(self, layout):
        super().__init__()
        self.dense = nn.Linear(layout["d_model"], layout["d_model"])
        self.attentive_pooling = AttentivePooling(layout)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        return self.activation(self.dense(self.attentive_pooling(hidden_states)))


class HATEncoder(nn.Module):
    def __init__(self, layout):
        super().__init__()
        self.layer = nn.ModuleList([
            HATLayer(heads=layout["num_heads"], d_model=layout["d_model"], d_ff=layout["d_ff"],
                     region_size=layout["region_size"], use_region_encoder=True, use_WSI_encoder=idx == 0,
                     dropout=layout["dropout"], first_layer=idx == 0) for idx in range(2)])
        self.norm = LayerNorm(layout["d_model"])
        self.pooler = HATPooler(layout)
        self.region_size = layout["region_size"]

    def forward(self, x, mask):
        num_regions = int(np.ceil(x.shape[1] / (self.region_size - 1)))
        for layer in self.layer:
            x, mask = layer(x, mask, num_regions)
        x = self.norm(x)
        x = x.view(num_regions, self.region_size, x.size(-1))
        return self.pooler(x).unsqueeze(0)


class DecoderLayer(nn.Module):
    def __init__(self, size, self_attn, src_attn, feed_forward, dropout):
        super().__init__()
        self.size = size
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 3)

    def forward(self, x, memory, src_mask, tgt_mask, layer_past=None):
        m = memory
        src_mask = m.new_ones(m.shape[:2], dtype=torch.long).unsqueeze(-2)
        if layer_past is None:
            x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, tgt_mask))
            x = self.sublayer[1](x, lambda x: self.src_attn(x, m, m, src_mask))
            return self.sublayer[2](x, self.feed_forward)
        present = [None, None]
        x, present[0] = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, tgt_mask, layer_past[0]))
        x, present[1] = self.sublayer[1](x, lambda x: self.src_attn(x, m, m, src_mask, layer_past[1]))
        return self.sublayer[2](x, self.feed_forward), present


class Decoder(nn.Module):
    def __init__(self, layer, n):
        super().__init__()
        self.layers = clones(layer, n)
        self.norm = LayerNorm(layer.size)

    def forward(self, x, memory, src_mask, tgt_mask, past=None):
        if past is not None:
            present = [[], []]
            x = x[:, -1:]
            tgt_mask = tgt_mask[:, -1:] if tgt_mask is not None else None
            past = list(zip(past[0].split(2, dim=0), past[1].split(2, dim=0)))
        else:
            past = [None] * len(self.layers)
        for layer, layer_past in zip(self.layers, past):
            x = layer(x, memory, src_mask, tgt_mask, layer_past)
            if layer_past is not None:
                present[0].append(x[1][0])
                present[1].append(x[1][1])
                x = x[0]
        if past[0] is None:
            return self.norm(x)
        return self.norm(x), [torch.cat(present[0], 0), torch.cat(present[1], 0)]


class Transformer(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, cmn):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.src_embed = src_embed
        self.tgt_embed = tgt_embed
        self.cmn = cmn

    def forward(self, src, tgt, src_mask, tgt_mask, memory_matrix):
        return self.decode(self.encode(src, src_mask), src_mask, tgt, tgt_mask, memory_matrix=memory_matrix)

    def encode(self, src, src_mask):
        return self.encoder(self.src_embed(src), src_mask)

    def decode(self, memory, src_mask, tgt, tgt_mask, past=None, memory_matrix=None):
        embeddings = self.tgt_embed(tgt)
        mm = memory_matrix.unsqueeze(0).expand(embeddings.size(0), memory_matrix.size(0), memory_matrix.size(1))
        embeddings = embeddings + self.cmn(embeddings, mm, mm)
        return self.decoder(embeddings, memory, src_mask, tgt_mask, past=past)


def repeat_tensors(n, x):
    if torch.is_tensor(x):
        x = x.unsqueeze(1)
        x = x.expand(-1, n, *([-1] * len(x.shape[2:])))
        return x.reshape(x.shape[0] * n, *x.shape[2:])
    return [repeat_tensors(n, _) for _ in x]


class BaseHistGen(nn.Module):
    """``BaseHistGen`` + the parts of ``AttModel`` / ``CaptionModel`` it uses."""

    def __init__(self, args, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_seq_length = args.max_seq_length
        self.bos_idx = self.eos_idx = self.pad_idx = 0
        self.num_layers, self.d_model, self.d_ff = args.num_layers, args.d_model, args.d_ff
        self.num_heads, self.dropout, self.K = args.num_heads, args.dropout, args.prototype_num
        self.att_embed = nn.Sequential(nn.Linear(args.d_vf, args.d_model), nn.ReLU(), nn.Dropout(args.drop_prob_lm))
        self.cmn = MultiThreadMemory(args.num_heads, args.d_model, topk=args.topk)
        layout = {"num_heads": self.num_heads, "d_model": self.d_model, "d_ff": self.d_ff,
                  "region_size": args.region_size, "dropout": self.dropout}
        self.model = self.make_model(vocab_size + 1, self.cmn, layout)
        self.logit = nn.Linear(args.d_model, vocab_size + 1)
        self.memory_matrix = nn.Parameter(torch.FloatTensor(args.cmm_size, args.cmm_dim))
        nn.init.normal_(self.memory_matrix, 0, 1 / args.cmm_dim)
        self.attn_mem = MultiHeadedAttention(self.num_heads, self.d_model)

    def make_model(self, tgt_vocab, cmn, layout):
        c = copy.deepcopy
        attn = MultiHeadedAttention(self.num_heads, self.d_model)
        ff = PositionwiseFeedForward(self.d_model, self.d_ff, self.dropout)
        position = PositionalEncoding(self.d_model, self.dropout)
        model = Transformer(HATEncoder(layout),
                            Decoder(DecoderLayer(self.d_model, c(attn), c(attn), c(ff), self.dropout), self.num_layers),
                            lambda x: x, nn.Sequential(Embeddings(self.d_model, tgt_vocab), c(position)), cmn)
        for p in model.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        return model

    def _prepare_feature_forward(self, att_feats, seq=None):
        att_feats = self.att_embed(att_feats)
        att_masks = att_feats.new_ones(att_feats.shape[:2], dtype=torch.long)
        mm = self.memory_matrix.unsqueeze(0).expand(att_feats.size(0), *self.memory_matrix.shape)
        indices = torch.linspace(0, att_feats.shape[1] - 1, steps=self.K).long()
        responses = self.cmn(att_feats[:, indices, :], mm, mm)
        response_mask = responses.new_ones(responses.shape[:2], dtype=torch.long).unsqueeze(-2)
        att_feats = att_feats + self.attn_mem(att_feats, responses, responses, response_mask)
        att_masks = att_masks.unsqueeze(-2)
        seq_mask = None
        if seq is not None:
            seq = seq[:, :-1]
            seq_mask = (seq.data > 0)
            seq_mask[:, 0] += True
            seq_mask = seq_mask.unsqueeze(-2) & subsequent_mask(seq.size(-1)).to(seq_mask)
        return att_feats, seq, att_masks, seq_mask

    def forward_train(self, att_feats, seq):
        """``_forward``: teacher-forced log-probs [1, T-1, V+1]."""
        att_feats, seq, att_masks, seq_mask = self._prepare_feature_forward(att_feats, seq)
        out = self.model(att_feats, seq, att_masks, seq_mask, memory_matrix=self.memory_matrix)
        return F.log_softmax(self.logit(out), dim=-1)

    def _prepare_feature(self, fc_feats, att_feats):
        att_feats, _, att_masks, _ = self._prepare_feature_forward(att_feats)
        memory = self.model.encode(att_feats, att_masks)
        return fc_feats[..., :1], att_feats[..., :1], memory, att_masks

    def core(self, it, fc_feats_ph, att_feats_ph, memory, state, mask):
        if len(state) == 0:
            ys = it.unsqueeze(1)
            past = [fc_feats_ph.new_zeros(self.num_layers * 2, fc_feats_ph.shape[0], 0, self.d_model),
                    fc_feats_ph.new_zeros(self.num_layers * 2, fc_feats_ph.shape[0], 0, self.d_model)]
        else:
            ys = torch.cat([state[0][0], it.unsqueeze(1)], dim=1)
            past = state[1:]
        out, past = self.model.decode(memory, mask, ys, subsequent_mask(ys.size(1)), past=past,
                                      memory_matrix=self.memory_matrix)
        return out[:, -1], [ys.unsqueeze(0)] + past

    def get_logprobs_state(self, it, fc_feats, att_feats, p_att_feats, att_masks, state):
        output, state = self.core(it, fc_feats, att_feats, p_att_feats, state, att_masks)
        return F.log_softmax(self.logit(output), dim=1), state

    def sample_beam(self, fc_feats, att_feats, beam_size=3):
        """``_sample_beam`` (sample_n = 1): best sequence [B, max_seq_length]."""
        batch_size = fc_feats.size(0)
        p_fc, p_att, pp_att, p_masks = self._prepare_feature(fc_feats, att_feats)
        seq = fc_feats.new_full((batch_size, self.max_seq_length), self.pad_idx, dtype=torch.long)
        it = fc_feats.new_full([batch_size], self.bos_idx, dtype=torch.long)
        logprobs, state = self.get_logprobs_state(it, p_fc, p_att, pp_att, p_masks, [])
        p_fc, p_att, pp_att, p_masks = repeat_tensors(beam_size, [p_fc, p_att, pp_att, p_masks])
        done_beams = self.beam_search(state, logprobs, p_fc, p_att, pp_att, p_masks, beam_size=beam_size)
        for k in range(batch_size):
            seq_len = done_beams[k][0]["seq"].shape[0]
            seq[k, :seq_len] = done_beams[k][0]["seq"]
        return seq

    def beam_search(self, init_state, init_logprobs, *args, beam_size):
        """``CaptionModel.beam_search`` with group_size 1, no diversity, no length penalty."""

        def beam_step(logprobs, beam_size, t, beam_seq, beam_logprobs_sum, state):
            batch_size = beam_logprobs_sum.shape[0]
            vocab_size = logprobs.shape[-1]
            logprobs = logprobs.reshape(batch_size, -1, vocab_size)
            if t == 0:
                beam_logprobs_sum = beam_logprobs_sum[:, :1]
            candidate_logprobs = beam_logprobs_sum.unsqueeze(-1) + logprobs
            ys, ix = torch.sort(candidate_logprobs.reshape(candidate_logprobs.shape[0], -1), -1, True)
            ys, ix = ys[:, :beam_size], ix[:, :beam_size]
            beam_ix = ix // vocab_size
            selected_ix = ix % vocab_size
            state_ix = (beam_ix + torch.arange(batch_size).type_as(beam_ix).unsqueeze(-1) * logprobs.shape[1]).reshape(-1)
            if t > 0:
                beam_seq = beam_seq.gather(1, beam_ix.unsqueeze(-1).expand_as(beam_seq))
            beam_seq = torch.cat([beam_seq, selected_ix.unsqueeze(-1)], -1)
            beam_logprobs_sum = beam_logprobs_sum.gather(1, beam_ix) + logprobs.reshape(batch_size, -1).gather(1, ix)
            assert (beam_logprobs_sum == ys).all()
            state = [s[:, state_ix] for s in state]
            return beam_seq, beam_logprobs_sum, state

        batch_size = init_logprobs.shape[0]
        beam_seq = torch.LongTensor(batch_size, beam_size, 0)
        beam_logprobs_sum = torch.zeros(batch_size, beam_size)
        done_beams = [[] for _ in range(batch_size)]
        state = [_.clone() for _ in init_state]
        logprobs = init_logprobs.clone()
        for t in range(self.max_seq_length):
            beam_seq, beam_logprobs_sum, state = beam_step(logprobs, beam_size, t, beam_seq, beam_logprobs_sum, state)
            for b in range(batch_size):
                is_end = beam_seq[b, :, t] == self.eos_idx
                if t == self.max_seq_length - 1:
                    is_end.fill_(1)
                for vix in range(beam_size):
                    if is_end[vix]:
                        done_beams[b].append({"seq": beam_seq[b, vix].clone(), "p": beam_logprobs_sum[b, vix].item()})
                beam_logprobs_sum[b, is_end] -= 1000
            it = beam_seq[:, :, t].reshape(-1)
            logprobs, state = self.get_logprobs_state(it, *(list(args) + [state]))
            logprobs = F.log_softmax(logprobs, dim=-1)
        return [sorted(done_beams[b], key=lambda x: -x["p"])[:beam_size] for b in range(batch_size)]


class HistGenModel(nn.Module):
    """``models/histgen_model.py`` with the ResNet replaced by a one-parameter stub."""

    def __init__(self, args, vocab_size, in_dim=1024):
        super().__init__()
        self.encoder_decoder = BaseHistGen(args, vocab_size)
        self.wsi_mapping = nn.Linear(in_dim, args.d_vf)
        self.visual_extractor = nn.Module()
        self.visual_extractor.stub = nn.Parameter(torch.zeros(3))

    def forward_train(self, images, targets):
        return self.encoder_decoder.forward_train(self.wsi_mapping(images), targets)

    def sample(self, images, beam_size=3):
        att_feats = self.wsi_mapping(images)
        return self.encoder_decoder.sample_beam(torch.mean(att_feats, dim=1), att_feats, beam_size=beam_size)


def small_args(**kw):
    """HistGen's argparse namespace with small, test-friendly sizes."""
    base = dict(d_vf=48, d_model=32, d_ff=24, num_heads=4, num_layers=3, dropout=0.1, drop_prob_lm=0.5,
                topk=8, cmm_size=24, cmm_dim=32, region_size=8, prototype_num=16, max_seq_length=20)
    base.update(kw)
    return SimpleNamespace(**base)
