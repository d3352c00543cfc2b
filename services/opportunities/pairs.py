"""Collision bookkeeping: what one detection does to the pairs recorded for a deal. Pure, no I/O:
detection.py reads the candidates' verdicts and the pairs already recorded, asks `plan` what to
clear, write and announce, and carries it out.

The rules (detection.py's docstring says why):
- A pair whose owners see each other's deal ("open") is written while the deals look alike, with a
  current explanation, and cleared as soon as they do not.
- A pair whose owners do not ("blind") is written once and then left alone, matching or not, so that
  no edit of one owner's clears it or changes its row: either would answer a question about a deal
  that owner may not see.
- A pair someone dismissed is never recorded again.
- One write records at most `keep` new pairs: open ones first by score, then blind ones by id alone
  (ranking blind pairs by score would rank the hidden deal's score).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from .collisions import Match


@dataclass(frozen=True)
class Verdict:
    """One candidate as detection assessed it: its row, the comparison, whether the pair is blind,
    and whether it counts as a collision (by blind_collision for a blind pair, by score otherwise)."""
    row: object
    match: Match
    blind: bool
    hit: bool


@dataclass
class Plan:
    cleared: set[uuid.UUID] = field(default_factory=set)  # pairs whose rows are deleted
    written: dict[uuid.UUID, Match] = field(default_factory=dict)  # pairs (re)written with this match
    new: list[tuple[object, Match]] = field(default_factory=list)  # pairs found now: announced
    beyond_cut: int = 0  # new pairs that matched but were not recorded (over `keep`)
    current: set[uuid.UUID] = field(default_factory=set)  # every deal it collides with after the write


def plan(verdicts: dict[uuid.UUID, Verdict], known: set[uuid.UUID], blind: set[uuid.UUID],
         dismissed: set[uuid.UUID], *, keep: int) -> Plan:
    """known: the deals a pair is recorded with; blind: those of known and of verdicts whose pair is
    blind; dismissed: the deals a pair with was dismissed."""
    matches = {other_id: (v.row, v.match) for other_id, v in verdicts.items() if v.hit and other_id not in dismissed}
    fresh = sorted((i for i in matches if i not in known),
                   key=lambda i: (1, 0.0, str(i)) if i in blind else (0, -matches[i][1].score, str(i)))
    for dropped in fresh[keep:]:
        del matches[dropped]
    cleared = known - set(matches) - blind
    return Plan(
        cleared=cleared,
        written={i: match for i, (_row, match) in matches.items() if not (i in known and i in blind)},
        new=[matches[i] for i in matches if i not in known],
        beyond_cut=max(0, len(fresh) - keep),
        current=(known - cleared) | set(matches),
    )
