"""Character and byte spans of a decoded completion, mapped onto the completion's tokens.

A reward sees ``tokenizer.batch_decode(completion_ids, skip_special_tokens=True)`` but a span rule
shapes per-token advantages, so the spans found in the text must come back as (B, T) token masks.
Decoding is, for the decoders handled here, a per-token function plus a rule for the first token,
so each token's byte range follows from two per-vocabulary tables (surface length, separator)
with a gather and a cumulative sum: no loop over tokens, no host sync, any device.

Offsets are in UTF-8 bytes rather than characters because a byte-level BPE token can hold part of
a character; in bytes every token has an exact range, and a span (always whole characters)
overlaps each token that carries a byte of it.

Supported decoders (``tokenizer.backend_tokenizer.decoder``): ByteLevel, WordPiece, Metaspace, no
decoder (tokens joined by spaces), and Sequences of Replace (plain string), ByteFallback, Fuse
and Strip, which covers SentencePiece conversions (Llama 2, Mistral, Gemma). Not modelled: the
WordPiece ``cleanup`` option and ``clean_up_tokenization_spaces`` (they remove spaces depending on
the neighbouring text) and the replacement character that decoding puts for invalid UTF-8 (for
instance a completion cut inside an emoji). ``TokenAligner.check`` compares byte lengths, so it
flags the rows where such a step changed the length; offsets stay exact before the first byte it
changed (a replacement of equal length passes, its tokens then cover the replacement character).
"""

from __future__ import annotations

import json
import re

import torch

__all__ = ["TokenAligner", "bytes_to_unicode", "char_to_byte_offsets", "marker_mask", "span_token_mask"]

_BYTE_TOKEN = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    table = {b: chr(b) for b in [*printable, *range(ord("®"), ord("ÿ") + 1)]}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}


def _steps(decoder) -> list[dict]:
    """The decoder as a flat list of JSON step descriptions (nested Sequences flattened)."""
    if decoder is None:
        return []
    spec = json.loads(decoder.__getstate__())
    out: list[dict] = []

    def walk(d: dict) -> None:
        if d["type"] == "Sequence":
            for sub in d["decoders"]:
                walk(sub)
        else:
            out.append(d)

    walk(spec)
    return out


def _decode_token(token: str, first: bool, steps: list[dict]) -> tuple[int, bytes]:
    """(separator bytes inserted before the token, the token's own decoded bytes), mirroring the
    Rust decoders step by step; ``first`` is the first token the decoder receives."""
    sep, b, fused = 0, token.encode("utf-8"), False
    for st in steps:
        kind = st["type"]
        if kind == "ByteLevel":
            # A token with a character outside the table (an added token such as " 中") is kept as is.
            s = b.decode("utf-8", "surrogateescape")
            if all(c in _BYTE_OF_CHAR for c in s):
                b = bytes(_BYTE_OF_CHAR[c] for c in s)
        elif kind == "WordPiece":
            prefix = st.get("prefix", "##").encode("utf-8")
            if not first:  # the first token keeps a continuation prefix
                if b.startswith(prefix):
                    b = b[len(prefix):]
                else:
                    sep += 1
        elif kind == "Metaspace":
            scheme = st.get("prepend_scheme") or ("always" if st.get("add_prefix_space", True) else "never")
            # The decoder drops every replacement character of the first token, not only a leading one.
            drop = first and scheme != "never"
            b = b.replace(st["replacement"].encode("utf-8"), b"" if drop else b" ")
        elif kind == "Replace":
            pattern = st["pattern"]
            if "String" not in pattern or (fused and len(pattern["String"]) > 1):
                raise ValueError(f"unsupported Replace decoder step {st}: matches may cross tokens")
            b = b.replace(pattern["String"].encode("utf-8"), st["content"].encode("utf-8"))
        elif kind == "ByteFallback":
            m = _BYTE_TOKEN.fullmatch(b)
            if m:
                b = bytes([int(m.group(1), 16)])
        elif kind == "Fuse":
            fused = True  # later steps see one string: its start is the first token's start
        elif kind == "Strip":
            content = st["content"].encode("utf-8")
            if st.get("stop", 0) and fused:
                raise ValueError(f"unsupported Strip decoder step {st} after Fuse")
            if first or not fused:
                for _ in range(st.get("start", 0)):
                    if b.startswith(content):
                        b = b[len(content):]
                for _ in range(st.get("stop", 0)):
                    if b.endswith(content):
                        b = b[:-len(content)]
        else:
            raise ValueError(f"unsupported tokenizer decoder {kind!r}")
    if not steps and not first:
        sep += 1  # without a decoder, tokenizers joins the tokens with spaces
    return sep, b


class TokenAligner:
    """Byte offsets of tokens in decoded text. Built once per tokenizer (a Python pass over the
    vocabulary); every later call is a gather and a cumulative sum on the ids' device."""

    def __init__(self, tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not hasattr(backend, "get_added_tokens_decoder"):
            raise TypeError("TokenAligner needs a fast tokenizer (one with a `tokenizers` backend)")
        steps = _steps(backend.decoder)
        self.kind = "+".join(st["type"] for st in steps) or "none"
        added = backend.get_added_tokens_decoder()
        special = {i for i, t in added.items() if t.special} | set(getattr(tokenizer, "all_special_ids", []))
        n = max(len(tokenizer) if hasattr(tokenizer, "__len__") else 0, backend.get_vocab_size(True))
        # Rows: own length when not first, own length when first, separator, decoder sees it.
        # Column n stands for ids the tokenizer does not know, which decoding skips.
        rows = [[0] * (n + 1) for _ in range(4)]
        for i in range(n):
            token = backend.id_to_token(i)
            if token is None or i in special:
                continue
            sep, rest = _decode_token(token, False, steps)
            rows[0][i], rows[1][i] = len(rest), len(_decode_token(token, True, steps)[1])
            rows[2][i], rows[3][i] = sep, 1
        self.table = torch.tensor(rows, dtype=torch.int64)
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def _table(self, device: torch.device) -> torch.Tensor:
        if device not in self._on_device:
            self._on_device[device] = self.table.to(device)
        return self._on_device[device]

    def _offsets(self, ids: torch.Tensor, mask: torch.Tensor | None):
        table = self._table(ids.device)
        n = table.shape[1] - 1
        ids = ids.long()
        ids = torch.where((ids >= 0) & (ids < n), ids, n)
        length, first_length, sep, seen = table[:, ids].unbind(0)
        real = seen.bool() if mask is None else seen.bool() & mask.bool()
        # The decoder's first-token rule applies to the first token it receives: specials and
        # padding are dropped before decoding, so they do not count.
        first = real & (real.long().cumsum(-1) == 1)
        length = torch.where(first, first_length, length) * real
        step = sep * (real & ~first) + length
        ends = step.cumsum(-1)
        total = step.sum(-1)
        return ends - length, ends, total

    def byte_offsets(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(starts, ends), int64 (B, T): each token's byte range in the decoded text (a separator
        the decoder inserts before a token is not part of the token). Special tokens have an empty
        range where they sit; padding (mask 0) gets start == end == the row's total length."""
        starts, ends, total = self._offsets(completion_ids, completion_mask)
        if completion_mask is not None:
            keep = completion_mask.bool()
            total = total.unsqueeze(-1)
            starts, ends = torch.where(keep, starts, total), torch.where(keep, ends, total)
        return starts, ends

    def check(self, completion_ids: torch.Tensor, texts: list[str],
              completion_mask: torch.Tensor | None = None) -> torch.Tensor:
        """bool (B,): rows whose decoded text has the computed byte length, i.e. exact offsets."""
        if len(texts) != completion_ids.shape[0]:
            raise ValueError(f"{len(texts)} texts for {completion_ids.shape[0]} rows")
        total = self._offsets(completion_ids, completion_mask)[2]
        lengths = torch.tensor([len(t.encode("utf-8")) for t in texts], dtype=torch.int64)
        return lengths.to(total.device) == total


def char_to_byte_offsets(text: str, positions: list[int]) -> list[int]:
    """Byte offsets in ``text.encode("utf-8")`` of character positions (each in 0..len(text)).
    Positions are visited in sorted order so the text is encoded once in slices: linear time."""
    out = [0] * len(positions)
    char, byte = 0, 0
    for k in sorted(range(len(positions)), key=positions.__getitem__):
        p = positions[k]
        if not 0 <= p <= len(text):
            raise ValueError(f"character position {p} outside 0..{len(text)}")
        byte += len(text[char:p].encode("utf-8"))
        char = p
        out[k] = byte
    return out


def span_token_mask(starts: torch.Tensor, ends: torch.Tensor, span_start: torch.Tensor,
                    span_end: torch.Tensor) -> torch.Tensor:
    """bool (B, T): tokens whose byte range overlaps [span_start, span_end) of their row.

    ``span_start``/``span_end`` are (B,) or (B, S) for S spans per row (union). A span with a
    negative start is absent; empty spans and empty tokens (specials, padding) overlap nothing.
    """
    if span_start.dim() == 1:
        span_start, span_end = span_start.unsqueeze(-1), span_end.unsqueeze(-1)
    s, e = span_start.unsqueeze(-2), span_end.unsqueeze(-2)  # (B, 1, S)
    ts, te = starts.unsqueeze(-1), ends.unsqueeze(-1)  # (B, T, 1)
    hit = (ts < e) & (te > s) & (te > ts) & (e > s) & (s >= 0)
    return hit.any(-1)


def marker_mask(aligner: TokenAligner, completion_ids: torch.Tensor, texts: list[str], marker: str,
                mode: str, completion_mask: torch.Tensor | None = None) -> torch.Tensor:
    """bool (B, T) relative to the first occurrence of ``marker`` in each text.

    ``mode="after"``: tokens lying entirely after the marker's end (text to drop from the loss);
    ``"before"``: tokens entirely before its start. Rows without the marker are all False. An
    empty (special) token exactly at the marker's edge is neither, so an end-of-sequence token
    right after ``</answer>`` stays in the loss while one after trailing text does not.
    """
    if mode not in ("after", "before"):
        raise ValueError(f"marker_mask mode must be 'after' or 'before', not {mode!r}")
    if not marker:
        raise ValueError("marker_mask needs a non-empty marker")
    if len(texts) != completion_ids.shape[0]:
        raise ValueError(f"{len(texts)} texts for {completion_ids.shape[0]} rows")
    starts, ends = aligner.byte_offsets(completion_ids, completion_mask)
    needle = marker.encode("utf-8")
    # A UTF-8 byte match of a valid string can only start at a character boundary, so the first
    # byte match is the first character match.
    found = [t.encode("utf-8").find(needle) for t in texts]
    present = torch.tensor([p >= 0 for p in found], device=starts.device).unsqueeze(-1)
    empty = ends == starts
    if mode == "after":
        edge = torch.tensor([p + len(needle) for p in found], device=starts.device).unsqueeze(-1)
        out = (starts > edge) | ((starts == edge) & ~empty)
    else:
        edge = torch.tensor(found, device=starts.device).unsqueeze(-1)
        out = (ends < edge) | ((ends == edge) & ~empty)
    out = out & present
    return out if completion_mask is None else out & completion_mask.bool()
