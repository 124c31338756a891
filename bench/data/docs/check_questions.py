"""Check bench/data/docs_questions.jsonl against the corpus built by make_corpus.py.

Usage:
    python bench/data/docs/check_questions.py [QUESTIONS.jsonl]

The corpus is built into a temporary folder, the text of every document is extracted the way a
retrieval pipeline would see it (md/txt: read as is; html: text content without <script> and
<style>, via html.parser; pdf: pypdf; docx: python-docx paragraphs), then whitespace is collapsed
and case folded. For each question the checker verifies:

* the fields id, lang, file, question, evidence and answer are present, the id is unique and lang
  is "en" or "fr";
* the file exists in the built corpus, and all questions on one file share a language;
* the evidence has 4 to 14 words and no Markdown markup or HTML tag;
* the evidence appears in its own file and in no other file.

It also reports corpus documents without any question, then prints counts per language and per
format, and exits with status 1 if any problem was found.
"""

import collections
import html.parser
import json
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # keep bench/data/docs free of __pycache__
import make_corpus  # the builder lives next to this file

DEFAULT_QUESTIONS = HERE.parent / "docs_questions.jsonl"
FIELDS = ("id", "lang", "file", "question", "evidence", "answer")
BLOCK_TAG = re.compile(
    r"^(address|article|aside|blockquote|br|dd|div|dl|dt|footer|form|h[1-6]|header|hr|li|main|nav|ol|p|pre"
    r"|section|table|td|th|title|tr|ul)$"
)
MARKUP = re.compile(r"(^\s*[-*#>]\s)|(\*\*)|`|<[a-zA-Z/][^>]*>|(^|\s)#{1,6}\s")


class HtmlText(html.parser.HTMLParser):
    """Collect the visible text of an HTML page, skipping <script> and <style>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif BLOCK_TAG.match(tag):
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif BLOCK_TAG.match(tag):
            self.parts.append(" ")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def extract_text(path):
    suffix = path.suffix.lower()
    if suffix in (".md", ".txt"):
        return path.read_text(encoding="utf-8")
    if suffix == ".html":
        parser = HtmlText()
        parser.feed(path.read_text(encoding="utf-8"))
        parser.close()
        return "".join(parser.parts)
    if suffix == ".pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)
    if suffix == ".docx":
        import docx

        return "\n".join(p.text for p in docx.Document(str(path)).paragraphs)
    raise ValueError(f"unsupported format: {path.name}")


def normalise(text):
    return " ".join(text.split()).casefold()


def load_questions(path):
    questions, problems = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            questions.append(json.loads(line))
        except json.JSONDecodeError as err:
            problems.append(f"line {number}: invalid JSON ({err})")
    return questions, problems


def check(questions, texts):
    """Return the list of problems found; texts maps file name to normalised text."""
    problems = []
    seen_ids = set()
    lang_of_file = {}
    for q in questions:
        qid = q.get("id", "?")
        missing = [f for f in FIELDS if not str(q.get(f, "")).strip()]
        if missing:
            problems.append(f"{qid}: missing fields {missing}")
            continue
        if qid in seen_ids:
            problems.append(f"{qid}: duplicate id")
        seen_ids.add(qid)
        if q["lang"] not in ("en", "fr"):
            problems.append(f"{qid}: lang must be en or fr, not {q['lang']!r}")
        if q["file"] not in texts:
            problems.append(f"{qid}: file {q['file']!r} is not in the built corpus")
            continue
        previous = lang_of_file.setdefault(q["file"], q["lang"])
        if previous != q["lang"]:
            problems.append(f"{qid}: lang {q['lang']} differs from other questions on {q['file']}")
        evidence = q["evidence"]
        words = len(evidence.split())
        if not 4 <= words <= 14:
            problems.append(f"{qid}: evidence has {words} words (4-14 expected)")
        if MARKUP.search(evidence):
            problems.append(f"{qid}: evidence contains markup: {evidence!r}")
        needle = normalise(evidence)
        found = sorted(name for name, text in texts.items() if needle in text)
        if q["file"] not in found:
            problems.append(f"{qid}: evidence not found in {q['file']}: {evidence!r}")
        others = [name for name in found if name != q["file"]]
        if others:
            problems.append(f"{qid}: evidence also appears in {', '.join(others)}: {evidence!r}")
    for name in sorted(set(texts) - set(lang_of_file)):
        problems.append(f"{name}: no question targets this document")
    return problems, lang_of_file


def print_counts(questions, texts, lang_of_file):
    def fmt(name):
        return Path(name).suffix.lstrip(".")

    docs = collections.Counter((lang_of_file.get(n, "?"), fmt(n)) for n in texts)
    qs = collections.Counter((q.get("lang", "?"), fmt(q.get("file", ""))) for q in questions)
    formats = sorted({f for _, f in docs} | {f for _, f in qs})
    langs = sorted({lang for lang, _ in docs} | {lang for lang, _ in qs})
    print(f"{'':14}" + "".join(f"{f:>7}" for f in formats) + f"{'total':>8}")
    for label, counter in (("documents", docs), ("questions", qs)):
        for lang in langs:
            row = [counter[(lang, f)] for f in formats]
            print(f"{label[:9] + ' ' + lang:14}" + "".join(f"{n:>7}" for n in row) + f"{sum(row):>8}")
        total = [sum(counter[(lang, f)] for lang in langs) for f in formats]
        print(f"{label[:9] + ' all':14}" + "".join(f"{n:>7}" for n in total) + f"{sum(total):>8}")


def main(argv):
    questions_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_QUESTIONS
    questions, problems = load_questions(questions_path)
    with tempfile.TemporaryDirectory() as tmp:
        names = make_corpus.build(tmp)
        texts = {name: normalise(extract_text(Path(tmp) / name)) for name in names}
        size = sum((Path(tmp) / name).stat().st_size for name in names)
    found, lang_of_file = check(questions, texts)
    problems += found
    for problem in problems:
        print("PROBLEM", problem)
    print(
        f"corpus: {len(texts)} documents, {size / 1024:.0f} KiB; questions: {len(questions)} in {questions_path.name}"
    )
    print_counts(questions, texts, lang_of_file)
    print(f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
