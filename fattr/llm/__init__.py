"""fattr.llm: attribution of what a language model generates, all target tokens in one pass.

>>> res = fattr.llm.attribute(model, tokenizer, "The cat sat on the", target=" mat")
>>> res.token_attr          # (T, L): target token x prompt token
>>> res.to_html(), res.plot()

See `attribute` for the methods, features and scores, and docs/llm.md.
"""

from fattr.llm.attribute import attribute
from fattr.llm.result import TextAttribution

__all__ = ["TextAttribution", "attribute"]
