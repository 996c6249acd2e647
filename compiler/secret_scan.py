"""Secrets written into a spec: found before anything is planned, and masked in every message.

Three kinds of evidence, from the most to the least certain:
- known token formats (AWS, GitHub, GitLab, Hugging Face, OpenAI, Slack, private keys) and
  credentials in a URL (`https://user:pass@host`), anywhere in the spec, in keys as in values;
- keys named like a secret (`WANDB_API_KEY`, `db_password`) holding text; the name is split into
  words, so `TOKENIZERS_PARALLELISM` is not `TOKEN`;
- high-entropy text (AWS secret keys, W&B keys, random tokens) in the keys and values of the
  environment and tags a backend passes on, where nothing random belongs.
"""
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

KNOWN_TOKENS: List[Tuple["re.Pattern", str]] = [
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), "a Hugging Face access token"),
    (re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}"), "a GitHub token"),
    (re.compile(r"\bgl(?:pat|dt|rt|cbt|ptt|oas|ft|imt|agent|wt)-[A-Za-z0-9_-]{20,}"), "a GitLab token"),
    (re.compile(r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"), "an OpenAI-style API secret key"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r"-----BEGIN[A-Z ]* PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/?#@:]*:[^\s/?#@]+@"), "credentials in a URL (user:password@)"),
]
# AWS secret access keys and W&B API keys have no prefix: 40 characters of base64 or hex.
UNPREFIXED_TOKENS: List[Tuple["re.Pattern", str]] = [
    (re.compile(r"(?<![0-9a-zA-Z])[0-9a-f]{40}(?![0-9a-zA-Z])"), "a Weights & Biases API key"),
    (re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"), "an AWS secret access key"),
]
# Name words of a key that holds a secret; pairs are two words in a row (`API_KEY`, `accessKey`).
SECRET_WORDS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "APIKEY", "CREDENTIAL", "CREDENTIALS",
                "PRIVATEKEY", "AUTHTOKEN"}
SECRET_WORD_PAIRS = {("API", "KEY"), ("ACCESS", "KEY"), ("PRIVATE", "KEY"), ("SECRET", "KEY"), ("AUTH", "KEY")}
# Values of a secret-named key that say nothing secret (`HF_HUB_DISABLE_TOKEN: "1"`).
HARMLESS_VALUE = re.compile(r"^(|true|false|yes|no|on|off|none|null|[0-9]+)$", re.I)
# Separators (`-`, `_`, `.`, `/`) split names into words, so a random run is unbroken.
RANDOM_RUN = re.compile(r"[A-Za-z0-9+=]{20,}")
# Random base64/alphanumeric text carries about log2(62) ≈ 6 bits per character, English-like names
# under 4; hex tops out at 4 bits, so hex runs are judged by their own threshold.
MIN_ENTROPY_BITS_PER_CHAR = 4.0
MIN_HEX_ENTROPY_BITS_PER_CHAR = 3.3
MIN_CLASS_SWITCHES = 0.4


@dataclass
class Finding:
    path: tuple
    what: str
    key: Optional[str] = None  # the secret is this key of the mapping at `path`, not a value
    by_name: bool = False  # the value is text under a key named like a secret


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _looks_random(run: str) -> bool:
    """Letters and digits mixed with the spread of characters random text has."""
    if re.fullmatch("[0-9a-f]+", run):
        return bool(re.search("[0-9]", run) and re.search("[a-f]", run)) \
            and shannon_entropy(run) >= MIN_HEX_ENTROPY_BITS_PER_CHAR
    classes = [_char_class(c) for c in run]
    if len(set(classes)) < 3:
        return False
    # CamelCase names switch between lower, upper and digits at word boundaries only; random text
    # switches at about 6 of 10 characters.
    switches = sum(a != b for a, b in zip(classes, classes[1:])) / (len(run) - 1)
    return switches >= MIN_CLASS_SWITCHES and shannon_entropy(run) >= MIN_ENTROPY_BITS_PER_CHAR


def _char_class(char: str) -> str:
    return "lower" if char.islower() else "upper" if char.isupper() else "digit" if char.isdigit() else "other"


def known_token(text: str) -> Optional[str]:
    for pattern, what in KNOWN_TOKENS:
        if pattern.search(text):
            return what
    return None


def unprefixed_token(text: str) -> Optional[str]:
    """An AWS secret key or W&B key shape with the mixed, random look of one."""
    for pattern, what in UNPREFIXED_TOKENS:
        for match in pattern.finditer(text):
            if _looks_random(match.group()):
                return what
    return None


def random_text(text: str) -> Optional[str]:
    what = unprefixed_token(text)
    if what:
        return what
    if any(_looks_random(run) for run in RANDOM_RUN.findall(text)):
        return "a random-looking token"
    return None


def name_words(key: str) -> List[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)
    return [word.upper() for word in re.split(r"[^A-Za-z0-9]+", spaced) if word]


def is_secret_name(key: str) -> bool:
    words = name_words(key)
    return any(word in SECRET_WORDS for word in words) or any(pair in SECRET_WORD_PAIRS for pair in zip(words, words[1:]))


def scan(data: object, path: tuple, passed_on: Tuple[tuple, ...], reference_keys: Tuple[str, ...]) -> Iterator[Finding]:
    """Every secret in `data`. `passed_on` are the paths of mappings handed to a backend as they are
    (environment, tags), where random text is refused too; `reference_keys` name a reference's parts."""
    if isinstance(data, dict):
        strict = path in passed_on
        for key, value in data.items():
            key_text = str(key)
            what = known_token(key_text) or (random_text(key_text) if strict else None)
            if what:
                yield Finding(path, what, key=key)
                continue
            if isinstance(value, str) and key_text not in reference_keys and is_secret_name(key_text) \
                    and not HARMLESS_VALUE.match(value.strip()):
                yield Finding(path + (key,), "a secret written inline", by_name=True)
                continue
            if strict and isinstance(value, str):
                what = known_token(value) or random_text(value)
                if what:
                    yield Finding(path + (key,), what)
                    continue
            yield from scan(value, path + (key,), passed_on, reference_keys)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from scan(value, path + (index,), passed_on, reference_keys)
    elif isinstance(data, str):
        what = known_token(data)
        if what:
            yield Finding(path, what)


def _mask_match(match: "re.Match") -> str:
    text = match.group()
    if "://" in text:
        return text[:text.index("://") + 3] + "***@"
    return text[:4] + "…"


def mask(text: str) -> str:
    """`text` with every known or unprefixed token cut to its first characters."""
    for pattern, _ in KNOWN_TOKENS:
        text = pattern.sub(_mask_match, text)
    for pattern, _ in UNPREFIXED_TOKENS:
        text = pattern.sub(lambda m: _mask_match(m) if _looks_random(m.group()) else m.group(), text)
    return text
