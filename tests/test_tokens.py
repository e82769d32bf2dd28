"""Token byte offsets against real tokenizers built locally (byte-level BPE, WordPiece, Metaspace,
SentencePiece-style byte fallback): offsets must tile the text that ``batch_decode`` returns."""

from __future__ import annotations

import json
import re
from functools import cache

import pytest
import torch
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from kdsl.training.tokens import (
    TokenAligner,
    bytes_to_unicode,
    char_to_byte_offsets,
    marker_mask,
    span_token_mask,
)

CORPUS = [
    "<think>NDVI is high, the near infrared is far above red.</think><answer>Vegetation</answer>",
    "<think>MNDWI is positive: green above shortwave infrared.</think><answer>Water</answer>",
    "Réflectance élevée, café, naïve résumé. 中文文本 中文 emoji 🌍🌱💧 and plain text 0123456789.",
    "<think>Le sol est nu, très sec.</think><answer>Bare soil 🏜</answer> done",
]

TEXTS = [
    "<think>short</think><answer>Vegetation</answer>",
    "<think>Réflectance élevée à 中文 🌍</think> <answer>Eau 💧 中</answer> trailing text 🌱",
    "no tags here, just café 中文 🌍",
    "<answer>x</answer>",
    "before <answer>multi 👩\u200d👩\u200d👧 family</answer> after </answer> twice",
    "ü",
    "",
    "  double  spaces\nnew line\ttab <tool> and 答 and unseen ω Ж ☃",
    "<think>only thinking, 中文文本 🌱💧 no answer",
    "<answer>中</answer>🌍",
]

KINDS = ["bytelevel", "wordpiece", "metaspace", "bytefallback"]
SPECIALS = ["<|endoftext|>", "<|pad|>"]


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    tok.add_tokens([AddedToken("<tool>", special=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")


@cache
def make(kind: str) -> PreTrainedTokenizerFast:
    if kind == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        # 256 bytes plus few merges: most multi-byte characters stay split across tokens.
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(CORPUS * 3, trainer)
        # An added token with characters outside the byte table is decoded verbatim.
        tok.add_tokens([AddedToken(" 答", special=False)])
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
        tok.train_from_iterator(CORPUS * 3, trainers.WordPieceTrainer(vocab_size=150,
                                                                      special_tokens=["[UNK]", *SPECIALS]))
    elif kind == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(vocab_size=150,
                                                                special_tokens=["<unk>", *SPECIALS]))
    else:  # SentencePiece conversion as in Llama 2 / Mistral: rare characters fall back to bytes.
        base = Tokenizer(models.BPE())
        base.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        base.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(vocab_size=150, special_tokens=SPECIALS,
                                                                 limit_alphabet=40))
        spec = json.loads(base.to_str())["model"]
        vocab = dict(spec["vocab"])
        for b in range(256):
            vocab.setdefault(f"<0x{b:02X}>", len(vocab))
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True))
        tok.add_special_tokens(SPECIALS)
        tok.normalizer = base.normalizer
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    return _wrap(tok)


@cache
def aligner(kind: str) -> TokenAligner:
    return TokenAligner(make(kind))


_BYTE_OF = {c: b for b, c in bytes_to_unicode().items()}


def expected_piece(kind: str, token: str, first: bool) -> tuple[bytes, bytes]:
    """(separator, surface bytes) of one token, as the decoder writes it."""
    if kind == "bytelevel":
        if all(c in _BYTE_OF for c in token):
            return b"", bytes(_BYTE_OF[c] for c in token)
        return b"", token.encode()
    if kind == "wordpiece":
        if first:
            return b"", token.encode()
        return (b"", token[2:].encode()) if token.startswith("##") else (b" ", token.encode())
    if kind == "metaspace":
        return b"", token.replace("▁", "" if first else " ").encode()
    m = re.fullmatch(r"<0x([0-9A-F]{2})>", token)
    surface = bytes([int(m.group(1), 16)]) if m else token.replace("▁", " ").encode()
    return b"", surface[1:] if first and surface.startswith(b" ") else surface


def build_batch(tok, texts):
    """Right-padded ids with an end-of-sequence token; some rows also carry a special token first
    or in the middle (dropped by decoding, so the first-token rule must skip it)."""
    rows = []
    for i, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if i % 3 == 1:
            ids = [tok.eos_token_id, *ids]
        elif i % 3 == 2:
            ids = [*ids[: len(ids) // 2], tok.eos_token_id, *ids[len(ids) // 2:]]
        rows.append([*ids, tok.eos_token_id])
    width = max(map(len, rows)) + 2
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
    return ids, mask


def skipped(tok) -> set[int]:
    """Ids that decoding with skip_special_tokens drops: the backend's special added tokens."""
    return {i for i, t in tok.added_tokens_decoder.items() if t.special}


def reference_offsets(kind, tok, ids, mask, decoded):
    """Offsets by a Python walk over the tokens, checked to rebuild the decoded text exactly."""
    special = skipped(tok)
    starts, ends = [], []
    for b in range(ids.shape[0]):
        pos, first, pieces, rs, re_ = 0, True, [], [], []
        for t in range(ids.shape[1]):
            tid = int(ids[b, t])
            if mask[b, t] and tid not in special:
                sep, surface = expected_piece(kind, tok.convert_ids_to_tokens(tid), first)
                pieces.append(sep + surface)
                rs.append(pos + len(sep))
                re_.append(pos + len(sep) + len(surface))
                pos, first = re_[-1], False
            else:
                rs.append(pos)
                re_.append(pos)
        text = decoded[b].encode()
        assert b"".join(pieces) == text, (kind, decoded[b])
        starts.append(rs)
        ends.append(re_)
    return torch.tensor(starts), torch.tensor(ends)


@cache
def setup(kind):
    tok = make(kind)
    ids, mask = build_batch(tok, TEXTS)
    decoded = tok.batch_decode(ids, skip_special_tokens=True)
    ref_starts, ref_ends = reference_offsets(kind, tok, ids, mask, decoded)
    return tok, ids, mask, decoded, ref_starts, ref_ends


def brute_overlap(ref_starts, ref_ends, spans):
    """spans[b]: list of (start, end) byte ranges; a token overlaps when both are non-empty and intersect."""
    out = torch.zeros(ref_starts.shape, dtype=torch.bool)
    for b, row in enumerate(spans):
        for t in range(ref_starts.shape[1]):
            s, e = int(ref_starts[b, t]), int(ref_ends[b, t])
            out[b, t] = any(e > s and se > ss >= 0 and s < se and e > ss for ss, se in row)
    return out


def tags(kind):
    tok = make(kind)
    return tuple(tok.decode(tok("<answer>" if i == 0 else "</answer>", add_special_tokens=False)["input_ids"])
                 for i in range(2))


def test_gpt2_byte_table():
    from transformers.convert_slow_tokenizer import bytes_to_unicode as reference

    assert bytes_to_unicode() == reference()


@pytest.mark.parametrize("kind", KINDS)
def test_offsets_tile_decoded_text(kind):
    tok, ids, mask, decoded, ref_starts, ref_ends = setup(kind)
    al = aligner(kind)
    starts, ends = al.byte_offsets(ids, mask)
    assert starts.dtype == ends.dtype == torch.int64 and starts.shape == ids.shape
    assert torch.equal(starts, ref_starts) and torch.equal(ends, ref_ends)
    assert al.check(ids, decoded, mask).all()
    special = skipped(tok)
    for b, text in enumerate(decoded):
        data, first = text.encode(), True
        for t in range(ids.shape[1]):
            tid = int(ids[b, t])
            s, e = int(starts[b, t]), int(ends[b, t])
            if not mask[b, t]:
                assert s == e == len(data)
            elif tid in special:
                assert s == e
            else:
                assert data[s:e] == expected_piece(kind, tok.convert_ids_to_tokens(tid), first)[1]
                first = False
    # Without a mask the padding ids are special, hence skipped: same offsets.
    assert torch.equal(al.byte_offsets(ids)[0], starts) and al.check(ids, decoded).all()


def decode_and_compare(kind, rows):
    """Offsets of hand-made rows (right-padded) equal the reference walk over the decoded text."""
    tok, al = make(kind), aligner(kind)
    width = max(map(len, rows))
    ids = torch.tensor([[*r, *[tok.pad_token_id] * (width - len(r))] for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    decoded = tok.batch_decode(ids, skip_special_tokens=True)
    ref = reference_offsets(kind, tok, ids, mask, decoded)
    got = al.byte_offsets(ids, mask)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]) and al.check(ids, decoded, mask).all()
    return decoded


def test_first_token_rules():
    """The first token the decoder receives is treated apart: WordPiece keeps its "##", Metaspace
    drops all its "▁", the SentencePiece Strip removes one leading space; a special token before
    it does not count as first."""
    tok = make("wordpiece")
    cont = [i for t, i in tok.get_vocab().items() if t.startswith("##")][:2]
    word = tok.convert_tokens_to_ids("answer")
    texts = decode_and_compare("wordpiece", [[cont[0], word, *cont], [tok.eos_token_id, cont[1], word]])
    assert texts[0].startswith("##") and texts[1].startswith("##")
    tok = make("metaspace")
    bar, hello = tok.convert_tokens_to_ids("▁"), tok("hello café", add_special_tokens=False)["input_ids"]
    texts = decode_and_compare("metaspace", [[bar, bar, *hello], [tok.eos_token_id, bar, *hello]])
    assert texts == ["  hello café", " hello café"]
    tok = make("bytefallback")
    bar, snow = tok.convert_tokens_to_ids("▁"), tok("☃", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(snow)[-3:] == ["<0xE2>", "<0x98>", "<0x83>"]
    texts = decode_and_compare("bytefallback", [[bar, bar, *snow], [tok.eos_token_id, *snow, bar]])
    assert texts == ["  ☃", "☃ "]
    # Stray bytes decode to one U+FFFD each, which the length check notices.
    cut = torch.tensor([snow[-2:]])
    assert not aligner("bytefallback").check(cut, tok.batch_decode(cut)).any()


def test_batches_cover_the_interesting_tokens():
    """The shared batches really hold added tokens, byte-fallback tokens and unknown characters."""
    tok, ids, *_ = setup("bytelevel")
    added = {tok.convert_tokens_to_ids(" 答"), tok.convert_tokens_to_ids("<tool>")}
    assert added <= set(ids.flatten().tolist())
    tok, ids, *_ = setup("bytefallback")
    assert sum(t.startswith("<0x") for t in tok.convert_ids_to_tokens(ids.flatten().tolist())) > 10
    tok, ids, *_ = setup("wordpiece")
    assert tok.convert_tokens_to_ids("[UNK]") in ids.flatten().tolist()


def test_byte_level_splits_characters():
    """The batch really holds tokens that are only part of a character, and a special token
    between two halves of one character (decoding drops it before joining bytes)."""
    tok, ids, mask, decoded, ref_starts, ref_ends = setup("bytelevel")
    partial = 0
    for tid in ids[mask.bool()].tolist():
        raw = expected_piece("bytelevel", tok.convert_ids_to_tokens(tid), False)[1]
        try:
            raw.decode()
        except UnicodeDecodeError:
            partial += 1
    assert partial > 10
    one = tok("☃", add_special_tokens=False)["input_ids"]
    assert len(one) > 1
    row = torch.tensor([[one[0], tok.eos_token_id, *one[1:]]])
    text = tok.batch_decode(row, skip_special_tokens=True)
    assert text == ["☃"] and aligner("bytelevel").check(row, text).all()
    starts, ends = aligner("bytelevel").byte_offsets(row)
    assert ends[0, -1] == 3 and starts[0, 1] == ends[0, 1] == ends[0, 0] > 0
    got = span_token_mask(starts, ends, torch.tensor([0]), torch.tensor([3]))
    assert got.tolist() == [[True, False, *[True] * (len(one) - 1)]]


@pytest.mark.parametrize("kind", KINDS)
def test_span_masks_match_brute_force(kind):
    tok, ids, mask, decoded, ref_starts, ref_ends = setup(kind)
    al = aligner(kind)
    starts, ends = al.byte_offsets(ids, mask)
    open_tag, close_tag = tags(kind)
    outer, inner = [], []
    for text in decoded:
        i = text.find(open_tag)
        j = text.find(close_tag, i + len(open_tag)) if i >= 0 else -1
        if j < 0:
            outer.append((-1, -1))
            inner.append((-1, -1))
            continue
        a, b, c, d = char_to_byte_offsets(text, [i, i + len(open_tag), j, j + len(close_tag)])
        outer.append((a, d))
        inner.append((b, c))
    assert sum(s >= 0 for s, _ in outer) >= 4 and sum(s < 0 for s, _ in outer) >= 2
    span_start, span_end = torch.tensor(outer).unbind(-1)
    got = span_token_mask(starts, ends, span_start, span_end)
    want = brute_overlap(ref_starts, ref_ends, [[sp] for sp in outer])
    assert torch.equal(got, want) and got.any()
    for b, (s, _) in enumerate(outer):
        if s < 0:
            assert not got[b].any()
    # Two spans per row: the union.
    two_s = torch.tensor([[o[0], n[0]] for o, n in zip(outer, inner)])
    two_e = torch.tensor([[o[1], n[1]] for o, n in zip(outer, inner)])
    got2 = span_token_mask(starts, ends, two_s, two_e)
    assert torch.equal(got2, brute_overlap(ref_starts, ref_ends, [[o, n] for o, n in zip(outer, inner)]))
    # Single characters of multi-byte text: every token carrying one of its bytes overlaps.
    for b, text in enumerate(decoded):
        for ch in ("中", "🌍", "é"):
            k = text.find(ch)
            if k < 0:
                continue
            s, e = char_to_byte_offsets(text, [k, k + 1])
            one = span_token_mask(starts[b:b + 1], ends[b:b + 1], torch.tensor([s]), torch.tensor([e]))
            assert torch.equal(one, brute_overlap(ref_starts[b:b + 1], ref_ends[b:b + 1], [[(s, e)]]))
            assert one.any()


@pytest.mark.parametrize("kind", KINDS)
def test_marker_masks_match_brute_force(kind):
    tok, ids, mask, decoded, ref_starts, ref_ends = setup(kind)
    al = aligner(kind)
    open_tag, close_tag = tags(kind)
    for marker, mode in ((close_tag, "after"), (open_tag, "before")):
        got = marker_mask(al, ids, decoded, marker, mode, mask)
        for b, text in enumerate(decoded):
            k = text.find(marker)
            if k < 0:
                assert not got[b].any()
                continue
            lo, hi = char_to_byte_offsets(text, [k, k + len(marker)])
            for t in range(ids.shape[1]):
                s, e = int(ref_starts[b, t]), int(ref_ends[b, t])
                if mode == "after":
                    want = s > hi or (s == hi and e > s)
                else:
                    want = e < lo or (e == lo and e > s)
                assert bool(got[b, t]) == (want and bool(mask[b, t])), (kind, text, t)
        assert got.any()


def test_marker_end_of_sequence_and_first_occurrence():
    tok = make("bytelevel")
    al = aligner("bytelevel")
    texts = ["<answer>a</answer>", "<answer>a</answer> more </answer> 中", "no marker"]
    ids, mask = build_batch(tok, texts)
    decoded = tok.batch_decode(ids, skip_special_tokens=True)
    after = marker_mask(al, ids, decoded, "</answer>", "after", mask)
    real = mask.sum(-1)
    # Row 0: nothing after the marker, the end-of-sequence token right after it stays.
    assert not after[0].any()
    # Row 1: the text after the first "</answer>" and the end-of-sequence token are dropped.
    starts, ends = al.byte_offsets(ids, mask)
    edge = len(b"<answer>a</answer>")
    want = (starts >= edge) & mask.bool()
    assert torch.equal(after[1], want[1]) and after[1, real[1] - 1]
    assert not after[2].any()
    assert not marker_mask(al, ids, decoded, "</answer>", "before", mask)[2].any()


def test_truncated_character_is_flagged():
    """A completion cut inside a character decodes to U+FFFD (3 bytes) in place of the 2 bytes kept."""
    tok = make("bytelevel")
    ids = tok("ok ☃", add_special_tokens=False)["input_ids"]
    assert len(tok.convert_ids_to_tokens(ids)[-1]) == 1
    row = torch.tensor([ids, ids[:-1] + [tok.pad_token_id]])
    mask = torch.tensor([[1] * len(ids), [1] * (len(ids) - 1) + [0]])
    text = tok.batch_decode(row, skip_special_tokens=True)
    assert "\ufffd" in text[1]
    assert aligner("bytelevel").check(row, text, mask).tolist() == [True, False]


def test_unknown_ids_are_skipped_like_decoding():
    tok = make("metaspace")
    ids = tok("hello café", add_special_tokens=False)["input_ids"]
    row = torch.tensor([[len(tok) + 7, *ids, -1]])
    text = tok.batch_decode(row[:, :-1], skip_special_tokens=True)
    assert text == tok.batch_decode(torch.tensor([ids]), skip_special_tokens=True)
    al = aligner("metaspace")
    assert al.check(row, text).all()
    starts, ends = al.byte_offsets(row)
    assert starts[0, 0] == ends[0, 0] == 0 and starts[0, -1] == ends[0, -1] == len(text[0].encode())


def test_no_decoder_joins_with_spaces():
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "bé": 2, "中": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    row = torch.tensor([[1, 2, 3, 1]])
    text = wrapped.batch_decode(row, skip_special_tokens=False)
    al = TokenAligner(wrapped)
    assert text == ["a bé 中 a"]
    starts, ends = al.byte_offsets(row)
    assert starts.tolist() == [[0, 2, 6, 10]] and ends.tolist() == [[1, 5, 9, 11]]


def test_unsupported_decoder_raises():
    tok = Tokenizer(models.WordLevel({"a": 0}, unk_token="a"))
    tok.decoder = decoders.CTC()
    with pytest.raises(ValueError, match="CTC"):
        TokenAligner(tok)


def test_char_to_byte_offsets():
    text = "aé中🌍\u200db"
    positions = [6, 0, 3, 3, 1, 5, 2, 4]
    assert char_to_byte_offsets(text, positions) == [len(text[:p].encode()) for p in positions]
    assert char_to_byte_offsets("", [0]) == [0]
    with pytest.raises(ValueError):
        char_to_byte_offsets(text, [7])


def test_no_host_sync():
    """Offsets and masks are pure tensor code: they run on the meta device and trace as one graph."""
    al = aligner("bytelevel")
    tok, ids, mask, decoded, ref_starts, ref_ends = setup("bytelevel")
    starts, ends = al.byte_offsets(ids.to("meta"), mask.to("meta"))
    assert starts.device.type == "meta" and starts.shape == ids.shape
    span = torch.zeros(ids.shape[0], dtype=torch.long, device="meta")
    assert span_token_mask(starts, ends, span, span + 5).shape == ids.shape
    starts, ends = al.byte_offsets(ids, mask)
    spans = (torch.tensor([0, 3, -1] * 4)[: ids.shape[0]], torch.tensor([9, 40, 5] * 4)[: ids.shape[0]])
    compiled = torch.compile(span_token_mask, fullgraph=True, backend="eager")
    assert torch.equal(compiled(starts, ends, *spans), span_token_mask(starts, ends, *spans))
    offsets = torch.compile(al.byte_offsets, fullgraph=True, backend="eager")
    got = offsets(ids, mask)
    assert torch.equal(got[0], starts) and torch.equal(got[1], ends)
