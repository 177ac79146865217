"""Text from outside (a server, a file, NVML, the command line) made safe to show: one function per hazard.

- `printable`: for the terminal; control characters and invisible format characters become escapes
  (an escape sequence in a GPU name, a profile description or a bench label must not drive the terminal);
- `redact_url`: a URL with its credentials (`user:pw@`, query values) replaced by `***`, for every URL that
  is printed or saved;
- `looks_secret`: whether an environment variable holds a secret (by its name, or by a value that carries
  credentials), so every format renders it by reference and nothing prints it.
"""

from __future__ import annotations

import re
import urllib.parse

# C0/C1 controls (escape sequences, bells, carriage returns), DEL, and the invisible format characters that
# reorder or hide text (bidirectional overrides, zero-width, line and paragraph separators, BOM).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


def printable(text: object, limit: int | None = None) -> str:
    """External text for the terminal: control characters shown as escapes (\\x1b), bounded to `limit` characters."""
    shown = _UNPRINTABLE.sub(lambda m: repr(m.group(0))[1:-1], str(text))
    if limit is not None and len(shown) > limit:
        shown = shown[: max(0, limit - 3)] + "..."
    return shown


REDACTED = "***"


def redact_url(url: object) -> str:
    """`url` with its credentials hidden: `http://user:pw@h/?token=x#f` -> `http://***@h/?token=***`.

    The user information goes entirely, every query value and the fragment are replaced (a server's base
    URL needs none of them, and a value's name does not tell whether it is a secret). Also safe to print.
    """
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or "//" not in text:
        # Not a URL this function can take apart: hide anything between `//` and `@`, and after `?`.
        text = re.sub(r"//[^/?#]*@", "//" + REDACTED + "@", text)
        return printable(re.sub(r"[?#].*", "?" + REDACTED, text, flags=re.S) if re.search(r"[?#]", text) else text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rpartition("@")[2]
    query = ""
    if parts.query:
        names = [item.partition("=")[0] for item in re.split(r"[&;]", parts.query)]
        query = "&".join(f"{urllib.parse.quote(urllib.parse.unquote(n), safe='')}={REDACTED}" if n else REDACTED for n in names)
    fragment = REDACTED if parts.fragment else ""
    return printable(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment)))


# Variable names that hold secrets: tokens, keys, passwords and passphrases, auth material, credentials,
# personal access tokens (GITHUB_PAT, PAT_...), session cookies, private keys, signatures.
SECRET_NAME = re.compile(
    r"TOKEN|KEY|SECRET|PASS|AUTH|CREDENTIAL|COOKIE|SESSION|PRIVATE|SIGNATURE|(?:^|_)PAT(?:_|$)",
    re.IGNORECASE,
)
# Values that carry credentials whatever their variable is called: URL user information
# (`scheme://user:pw@host`), and well-known token shapes (Hugging Face, OpenAI, GitHub, AWS, Slack, JWT).
SECRET_VALUE = re.compile(
    r"://[^/?#@\s]*@"
    r"|\b(?:hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.)"
)


def looks_secret(name: str, value: object = None) -> bool:
    """An environment variable that must be rendered by reference: its name looks secret, or its value carries credentials."""
    if SECRET_NAME.search(name):
        return True
    return isinstance(value, str) and SECRET_VALUE.search(value) is not None
