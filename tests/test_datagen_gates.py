"""datagen's gates on what a case says: the target's values written in sentences (not dumped in a list, a
line of their own or ``label: value``)."""

from __future__ import annotations

import pytest

from mistralkit.datagen import gates, targets
from mistralkit.datagen.errors import SpecError
from mistralkit.datagen.spec import init_example, load_spec, read_seeds

ISSUE = ("tenant:\n\n21.28,41,16624\n\n30.98@example.com\n\nThe following is the text of the message. "
         "The message must state every fact of this record (TOON notation) in natural words, never as a list "
         "of fields.")
PROSE = ("Hello, I moved out of the flat I rented in Lyon at the end of March and handed the keys back to the "
         "agency the same day. My landlord still has not returned my deposit and does not answer my calls or "
         "my letters, although the flat was clean and nothing was broken. What can I do to get it back?")


@pytest.fixture(scope="module")
def legal(tmp_path_factory):
    return load_spec(init_example(tmp_path_factory.mktemp("legal")))


def refusal(spec, text: str, numbers: list[str]):
    return gates.check(spec, text, numbers, None, targets.instructions_of(spec))


def test_the_issue_boilerplate_has_none_of_its_numbers_in_context(legal):
    assert gates.out_of_context(ISSUE, ["21.28", "41", "16624"]) == ["21.28", "41", "16624"]
    assert refusal(legal, ISSUE, ["21.28", "41", "16624"]) is not None
    without_echo = ISSUE.split("The following")[0] + PROSE  # the prose gates alone would let this through
    assert gates.prose(legal, without_echo, targets.instructions_of(legal)) is None
    refused = refusal(legal, without_echo, ["21.28", "41", "16624"])
    assert refused.reason == "out_of_context" and "21.28, 41, 16624 are not written in a sentence" in refused.detail


@pytest.mark.parametrize("tail", [
    "\n1250, 14",                                   # a list of numbers on a line of its own
    "\n1250\n14",                                   # each on a line of its own
    "\nDeposit: 1250 EUR. Deadline: 14 days.",     # label: value
    " Figures: 1250, 14.",                          # a list inside the paragraph
    "\nAmount | 1250 | EUR\nDays | 14 | due",       # a table
])
def test_values_dumped_next_to_prose_are_refused_and_named(legal, tail):
    text = PROSE + tail
    assert gates.prose(legal, text, targets.instructions_of(legal)) is None  # only the new gate sees it
    refused = refusal(legal, text, ["1250", "14"])
    assert refused is not None and refused.reason == "out_of_context", refused
    assert refused.detail.startswith("1250, 14 are not written in a sentence")


REAL = [
    ("Hello, I moved out on 31 March and my landlord still has my deposit of 1 250 EUR. He promised to pay it back "
     "within 14 days, but nothing came.", ["1250", "14"]),
    ("landlord wont fix the heating since 10 dec. rent is 950 GBP. he says nxt month, i have a baby, pls help",
     ["950"]),
    ("Dear Sir or Madam,\n\nMy employer owes me 3,400 GBP of wages for May and June. I resigned on 15 July and "
     "he answered that I would get 1,700 GBP, half of it, within 30 days.\n\nYours faithfully,\nA. Martin",
     ["3400", "1700", "30"]),
    ("Bonjour, mon père est décédé le 3 mars 2024 en laissant un appartement estimé à 250 000 € et un compte "
     "courant de 12 500 €. Nous sommes deux enfants et il avait souscrit une assurance-vie de 80 000 € à "
     "notre profit.", ["250000", "12500", "80000"]),
]


@pytest.mark.parametrize(("text", "numbers"), REAL)
def test_real_cases_keep_their_numbers_in_sentences(legal, text, numbers):
    assert gates.out_of_context(text, numbers) == []
    assert refusal(legal, text, numbers) is None


def test_every_seed_of_the_example_passes_every_gate(legal):
    seeds = [s for s in read_seeds(legal) if s.record]
    assert len(seeds) >= 10
    for seed in seeds:
        assert refusal(legal, seed.text, targets.target_numbers(seed.record)) is None, seed.line


def test_the_share_of_stray_values_is_the_spec_s_and_checked(tmp_path, legal):
    signature = PROSE + " I paid 1250 EUR in June, 300 EUR in July and 45 EUR in August.\n\nRef. 2024117"
    assert refusal(legal, signature, ["1250", "300", "45", "2024117"]) is None  # 1 of 4 at the default 0.25
    refused = refusal(legal, signature + "\n14", ["1250", "300", "45", "2024117", "14"])
    assert refused.reason == "out_of_context" and refused.detail.startswith("2024117, 14 are not")
    spec = init_example(tmp_path)
    spec.write_text(spec.read_text() + "\nmax_out_of_context: 1\n")
    assert refusal(load_spec(spec), PROSE + "\n1250, 14", ["1250", "14"]) is None
    spec.write_text(spec.read_text().replace("max_out_of_context: 1", "max_out_of_context: 1.5"))
    with pytest.raises(SpecError, match=r"spec.yaml:\d+: max_out_of_context must be a share between 0 and 1"):
        load_spec(spec)
