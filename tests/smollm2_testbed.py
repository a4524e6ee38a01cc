"""What the SmolLM2 checks share: the test bed's directory (launch/fetch_testdata.sh makes
it; QSHARD_SMOLLM2_DIR names it) and token files made with the `tokenizers` package, so
the checks do not depend on qshard's own tokenizer."""
import os
import sys


def smollm2_dir():
    d = os.environ.get("QSHARD_SMOLLM2_DIR", "")
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json")
               if not os.path.isfile(os.path.join(d, f))]
    if not d or missing:
        sys.exit(f"FAIL: SmolLM2 directory {d!r} lacks {', '.join(missing) or 'everything'}; "
                 "run launch/fetch_testdata.sh (launch/setup.sh runs it)")
    return d


def token_file(model_dir, text_path, out_path):
    """[BOS if the tokenizer adds one] + encode(whole text) as int32 LE, like qshard tokenize.
    Returns the number of tokens."""
    import numpy as np
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(text_path, encoding="utf-8") as f:
        ids = tok.encode(f.read()).ids
    np.asarray(ids, dtype="<i4").tofile(out_path)
    return len(ids)
