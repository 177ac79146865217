"""The project's own documents: citations resolve, nothing points outside the repository.

Code comments, `launcher fit` output (`Term.source`), check messages and the docs cite
`docs/<file>.md#<anchor>`; the docs link each other with relative links. Every such citation
must name a file of the repository and a heading of that file (GitHub's anchor of it).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from launcher.fit.estimate import FitInput, estimate
from launcher.hardware.catalog import all_models

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
RUNBOOK = DOCS / "runbook.md"
SCANNED_DIRS = ("launcher", "tools", "docs", "tests")
SCANNED_FILES = ("README.md", "Dockerfile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".json", ".yaml", ".yml", ".txt", ".toml", ".log", ".sse", ""}

CITATION = re.compile(r"\bdocs/(?P<file>[A-Za-z0-9_-]+\.md)#(?P<anchor>[A-Za-z0-9_-]+)")
MD_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (headings inside code blocks are not headings)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: Counter[str] = Counter()
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        base = github_anchor(heading)
        out.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return out


def scanned_files() -> list[Path]:
    files = [REPO / name for name in SCANNED_FILES if (REPO / name).exists()]
    for top in SCANNED_DIRS:
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in TEXT_SUFFIXES:
                files.append(path)
    return files


def test_github_anchor_rules() -> None:
    assert github_anchor("6. Verify") == "6-verify"
    assert github_anchor("Measured on H200 (full 27B shape)") == "measured-on-h200-full-27b-shape"
    assert github_anchor("The `deployment` block") == "the-deployment-block"
    assert github_anchor("mtp-prefix-caching-corruption") == "mtp-prefix-caching-corruption"


@pytest.fixture(scope="module")
def doc_anchors() -> dict[str, set[str]]:
    return {path.name: anchors(path) for path in DOCS.glob("*.md")}


def test_every_docs_citation_resolves(doc_anchors: dict[str, set[str]]) -> None:
    """`docs/<file>.md#<anchor>` anywhere in the code, tools, tests or docs names a real heading."""
    broken = []
    found = 0
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in CITATION.finditer(text):
            found += 1
            if m.group("anchor") not in doc_anchors.get(m.group("file"), set()):
                line = text.count("\n", 0, m.start()) + 1
                broken.append(f"{path.relative_to(REPO)}:{line}: {m.group(0)}")
    assert found > 50, "the code cites the docs; the pattern found almost nothing"
    assert broken == [], "citations without a matching heading:\n" + "\n".join(broken)


def test_relative_links_of_the_docs_resolve(doc_anchors: dict[str, set[str]]) -> None:
    """Links between the docs (`[x](file.md#anchor)`, `[x](#anchor)`) and from README.md."""
    broken = []
    for path in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = FENCE.sub("", path.read_text(encoding="utf-8"))
        for m in MD_LINK.finditer(text):
            target = m.group("target")
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            doc = (path.parent / file_part).resolve() if file_part else path
            if not doc.exists():
                broken.append(f"{path.relative_to(REPO)}: {target} (no such file)")
            elif anchor and doc.suffix == ".md" and anchor not in anchors(doc):
                broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
    assert broken == [], "\n".join(broken)


def test_nothing_points_outside_the_repository() -> None:
    """No file of launcher/, tools/, docs/ or tests/ reads or cites the sibling notes folder."""
    # Built from parts so that this file does not match itself.
    forbidden = ["../" + "shared", "/work/" + "shared", "shared/" + "docs", "shared/" + "data",
                 "shared/" + "gpu-e2e", "model" + "-facts", "field" + "-notes", "vllm-engine" + "-notes"]
    hits = []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for word in forbidden:
            if word in text:
                line = text.count("\n", 0, text.index(word)) + 1
                hits.append(f"{path.relative_to(REPO)}:{line}: {word}")
    assert hits == [], "references to documents outside the repository:\n" + "\n".join(hits)


def test_fit_terms_cite_the_memory_model(doc_anchors: dict[str, set[str]]) -> None:
    """What `launcher fit` prints as each term's source is a heading of docs/memory-model.md."""
    for inp in (FitInput(total_memory_bytes=24 << 30, compute_capability=(8, 6), tensor_parallel_size=2),
                FitInput(total_memory_bytes=80 << 30, compute_capability=(9, 0), kv_cache_memory_bytes=10 << 30)):
        for term in estimate(inp).terms:
            cited = CITATION.findall(term.source)
            assert cited, f"{term.name}: {term.source!r} cites no document"
            for name, anchor in cited:
                assert anchor in doc_anchors[name], term.source
    for model in all_models():
        for name, anchor in CITATION.findall(model.source):
            assert anchor in doc_anchors[name], (model.key, model.source)


# ------------------------------------------------------------------------------ troubleshooting

ENTRY_FIELDS = ("Symptom", "Cause", "Fix", "Upstream")

# The upstream issues each entry must keep citing (vllm-project/vllm unless a repository is named).
KNOWN_UPSTREAM = {
    "gdn-spec-decode-launch-failure": ["PR #50021"],
    "mtp-concurrent-prose-illegal-memory-access": ["#40756", "PR #48475"],
    "tp-spec-decode-first-request-crash": ["#41190"],
    "mtp-acceptance-collapse": ["#52873"],
    "mtp-prefix-caching-corruption": ["#43559", "#48375", "#57128"],
    "prefix-cache-no-hits": ["#51250", "#38898", "#53504"],
    "mtp-weights-not-loaded": ["#53387", "#55322"],
    "too-many-speculative-tokens": ["#37035", "PR #37052"],
    "mtp-slower-than-baseline": ["#47602", "#47277"],
    "mtp-with-pipeline-parallel": ["#54039", "#49355", "#52071"],
    "mamba-cache-blocks-exhausted": ["#35945", "PR #34571", "PR #38270"],
    "free-memory-below-utilization": ["#20305"],
    "max-model-len-exceeds-kv-cache": ["#2418", "#10517", "#19407"],
    "long-prefill-oom": ["#44209"],
    "fp8-kv-unsupported-backend": ["#26431", "#41014"],
    "marlin-tp-padding": ["#40354", "PR #45295"],
    "unpinned-image-regression": ["#39610"],
    "tp-hang-without-p2p": ["#14449", "#8410", "#51513"],
    "custom-all-reduce-expandable-segments": ["#42609"],
    "driver-too-old-for-image": ["#18813", "#5635", "#4940"],
    "tool-call-inside-think": ["#39056", "#42021"],
    "think-tag-swallowed": ["#51679"],
    "streaming-tool-calls-unparsed": ["#22975", "PR #40861", "PR #45413"],
    "tool-choice-required-empty": ["#39056", "PR #35936"],
    "chat-template-bugs": [],
    "config-file-false-dropped": [],
    "sampling-repetition-loops": [],
}


def troubleshooting_entries() -> dict[str, dict[str, str]]:
    """anchor -> {field: text} for each `### anchor` entry of docs/troubleshooting.md."""
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    entries: dict[str, dict[str, str]] = {}
    for block in re.split(r"^(?=#{2,3} )", text, flags=re.M):
        if not block.startswith("### "):
            continue
        heading, _, body = block.partition("\n")
        fields = dict(re.findall(r"^- \*\*(\w+):\*\* (.*?)(?=^- \*\*|\Z)", body, re.S | re.M))
        anchor = heading[4:].strip()
        assert anchor not in entries, f"two entries named {anchor}"
        entries[anchor] = {k: " ".join(v.split()) for k, v in fields.items()}
    return entries


def test_entries_have_stable_anchors_and_every_part() -> None:
    entries = troubleshooting_entries()
    assert len(entries) >= len(KNOWN_UPSTREAM)
    for anchor, fields in entries.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", anchor), f"{anchor}: a heading that is its own anchor"
        assert github_anchor(anchor) == anchor
        missing = [f for f in ENTRY_FIELDS if not fields.get(f)]
        assert not missing, f"{anchor}: missing {missing}"


@pytest.mark.parametrize("anchor, issues", sorted(KNOWN_UPSTREAM.items()))
def test_known_failure_modes_keep_their_upstream_issues(anchor: str, issues: list[str]) -> None:
    entry = troubleshooting_entries().get(anchor)
    assert entry is not None, f"docs/troubleshooting.md lost the entry {anchor}"
    for issue in issues:
        assert re.search(re.escape(issue) + r"\b", entry["Upstream"]), f"{anchor} must cite {issue}"


def test_runbook_indexes_the_on_call_entries() -> None:
    """Section 11 of the runbook links every entry outside the development section."""
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    on_call = text.split("\n## Development and test engines", 1)[0]
    wanted = set(re.findall(r"^### ([a-z0-9-]+)$", on_call, re.M))
    section = RUNBOOK.read_text(encoding="utf-8").split("## 11. Troubleshooting", 1)[1]
    linked = set(re.findall(r"\(troubleshooting\.md#([a-z0-9-]+)\)", section))
    assert wanted and wanted == linked


# ------------------------------------------------------------------------------ memory model


def test_memory_model_keeps_the_h200_section() -> None:
    text = (DOCS / "memory-model.md").read_text(encoding="utf-8")
    assert "## Measured on H200 (full 27B shape)" in text


def test_memory_model_names_files_that_exist() -> None:
    """Repository paths the memory model names (`launcher/...`, `tests/...`, `tools/...`) exist."""
    text = (DOCS / "memory-model.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:launcher|tests|tools|docs|profiles)/[\w./-]+?)(?:::[\w.]+)?`", text))
    assert paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert missing == []
