"""The caller's script: what each emulated caller says, in which order, and how it behaves
while the bot speaks (how long it listens, when it barges in, how long it waits)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

QUIET_S = 0.8  # the bot has finished speaking after this much silence
PAUSE_S = 0.4  # then the caller waits this long before speaking
BARGE_IN_AFTER_S = 1.5  # a barge-in starts once the bot has spoken this long
GREETING_TIMEOUT_S = 15.0
REPLY_TIMEOUT_S = 15.0
LISTEN_MAX_S = 5.0  # the longest a caller listens to a reply before speaking anyway

# What the callers say. espeak-ng questions (synthetic French) and real recorded French.
QUESTIONS = {
    "horaires": "bonjour je voudrais les horaires de la mairie",
    "carte": "comment faire refaire ma carte d'identité",
    "poubelles": "quel jour passe le camion des poubelles",
    "voirie": "je voudrais signaler un nid de poule dans ma rue",
    "naissance": "je voudrais un acte de naissance",
}
REAL_PROMPTS = {  # asterisk-core-sounds-fr: name → what it says
    "hello": "Allo",
    "vm-sorry": "Désolé, je n'ai pas bien compris votre réponse.",
    "one-moment-please": "un moment s'il-vous-plaît",
}


@dataclass(frozen=True)
class Step:
    kind: str  # "speech", "barge_in" (over the bot) or "dtmf"
    clip: str = ""
    digit: str = ""


FIRST_STEP = Step("barge_in", "espeak:horaires")  # over the (long) greeting
CYCLE = (
    Step("speech", "asterisk:hello"),
    Step("speech", "espeak:carte"),
    Step("dtmf", digit="1"),  # "1" = the town hall's opening hours
    Step("speech", "espeak:poubelles"),
    Step("barge_in", "espeak:naissance"),  # over the previous reply
    Step("speech", "asterisk:vm-sorry"),
    Step("speech", "espeak:voirie"),
    Step("speech", "asterisk:one-moment-please"),
)


def call_script(offset: int) -> Iterator[Step]:
    """One call's turns: the barge-in over the greeting, then the cycle from ``offset`` on
    (so that concurrent calls do not all say the same thing at the same time)."""
    yield FIRST_STEP
    start = offset % len(CYCLE)
    yield from itertools.cycle(CYCLE[start:] + CYCLE[:start])
