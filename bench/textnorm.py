"""Text normalisation for word error rate (WER), and WER itself (jiwer).

Both the reference and every hypothesis go through the same `normalize()`:

1. Unicode NFKC, lower case; curly quotes and apostrophes become ASCII.
2. Hyphens, slashes and dashes become spaces ("well-known" -> "well known").
3. Times and numbers become words, so "9 o'clock" matches "nine o'clock" and
   "10:30" matches "ten thirty" ("10:00" -> "ten"); integers up to
   999,999 are spelled out, "%" becomes "percent".
4. Every other character that is not a letter, digit, apostrophe or space is
   removed (punctuation); apostrophes are kept inside words only
   ("don't" stays, "'quoted'" -> "quoted").
5. Whitespace is collapsed.

WER = (substitutions + deletions + insertions) / reference words, computed
by jiwer on the normalised strings. This is simpler than OpenAI's English
normaliser (no spelling variants, no filler-word removal); it is applied
identically to faster-whisper, the worker and the service, so their WERs are
comparable to each other.
"""

import re
import unicodedata

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """Spells out 0 <= n < 1,000,000 in English ("one hundred twenty three")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return _TENS[t] + ("" if o == 0 else " " + _ONES[o])
    if n < 1000:
        h, r = divmod(n, 100)
        return _ONES[h] + " hundred" + ("" if r == 0 else " " + number_words(r))
    if n < 1_000_000:
        k, r = divmod(n, 1000)
        return number_words(k) + " thousand" + ("" if r == 0 else " " + number_words(r))
    return " ".join(_ONES[int(d)] for d in str(n))


def _time(m: re.Match) -> str:
    h, mm = int(m.group(1)), int(m.group(2))
    return number_words(h) + ("" if mm == 0 else " " + number_words(mm))


def _number(m: re.Match) -> str:
    s = m.group(0).replace(",", "")
    if "." in s:
        whole, frac = s.split(".", 1)
        return number_words(int(whole)) + " point " + " ".join(_ONES[int(d)] for d in frac)
    return number_words(int(s))


def normalize(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    t = re.sub(r"[-\u2010-\u2015/]", " ", t)
    t = t.replace("%", " percent")
    t = re.sub(r"\b(\d{1,2}):(\d{2})\b", _time, t)
    t = re.sub(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", _number, t)
    t = re.sub(r"[^\w' ]+", " ", t)
    t = re.sub(r"(?<![a-z0-9])'|'(?![a-z0-9])", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref = normalize(reference)
    hyp = normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))


if __name__ == "__main__":
    for s in ["Nine o'clock, 9 o'clock!", "at 10:30 and 10:00", "It's 1,250 - well-known 'quoted' 3.5%"]:
        print(repr(s), "->", repr(normalize(s)))
