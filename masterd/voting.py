"""The master's start-up voting: do the nodes agree that this node is the master?

Ganeti's rule (ganeti-masterd(8) STARTUP; Ganeti 3.0's luxid and wconfd,
src/Ganeti/Daemon/Utils.hs):

* Every node of the cluster is asked, offline ones too ("just in case our
  configuration is stale"), this node included: the ``master_node_name``
  RPC, which answers the node's ssconf_master_node.
* A node that answers casts a valid vote for the name it answers; a node
  that cannot be reached or fails the call (no ssconf...) casts none.
* With N nodes, F valid votes naming this node and U nodes without an
  answer:

  - 2F > N (half plus one, a strict majority): the voting is won;
  - else, 2(F + U) > N: the missing answers could still make it a win, so
    the voting is not final: ask again after 10 s, at most 6 more times
    (MASTER_VOTING_RETRIES, MASTER_VOTING_RETRY_INTERVAL), then give up
    with "Couldn't gather voting results of enough nodes";
  - else the voting cannot be won: "Voting cannot be won by <me>, valid
    votes of N are [(count,"name"),...]" (the tally sorted by name).

  A tie (2F = N, as 2 of 4) is not a majority: it is lost, or not final
  while answers are missing.
* A single-node cluster (the node list names only this node, or nothing)
  wins without asking: this node is the whole cluster and its ssconf was
  already checked (Ganeti's rule for one node, from its masterd's
  ``CheckAgreement``).

The caller (masterd.daemon) refuses to start unless the voting is won,
with "Failed to verify master status: <message>" and exit status 1
(Ganeti's EXIT_FAILURE), and skips the voting altogether with
``--no-voting``.

Interface::

    votes = await gather_votes(nodes, rpc)      # [(voter, answer or None), ...] in node order
    result = decide(votes, my_name)             # VotingResult: outcome, counts, message
    result = await verify_master(nodes, rpc, my_name, retries=6, interval=10.0)
    result.won                                  # True when the master may start
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

log = logging.getLogger("masterd.voting")

#: Times the voting is repeated while it is not final (Ganeti's MASTER_VOTING_RETRIES).
MASTER_VOTING_RETRIES = 6
#: Seconds between two rounds of a voting that is not final (Ganeti's MASTER_VOTING_RETRY_INTERVALL).
MASTER_VOTING_RETRY_INTERVAL = 10.0

#: One node's vote: (voter, the master it names, or None when it gave no answer).
Vote = tuple[str, str | None]


class MasterNameAsker(Protocol):
    """What the voting needs of masterd.rpc.NodeRpcClient."""

    def master_node_name(self, nodes: Sequence[str]) -> Awaitable[dict[str, tuple[str | None, str | None]]]:
        ...


class Outcome(enum.Enum):
    #: A strict majority of the nodes name this node.
    WON = "won"
    #: No majority yet, but the nodes that did not answer could still make one.
    UNDECIDED = "undecided"
    #: Even if every missing node answered for this node, there would be no majority.
    LOST = "lost"


@dataclass(frozen=True)
class VotingResult:
    outcome: Outcome
    #: The node that asks (the would-be master).
    my_name: str
    #: Number of nodes asked (every node of the cluster).
    voters: int
    #: Valid votes naming `my_name`.
    in_favour: int
    #: Nodes without a valid answer (unreachable, failed), in node order.
    missing: tuple[str, ...]
    #: The valid votes: (count, name) per name answered, sorted by name.
    tally: tuple[tuple[int, str], ...]
    #: What a person reads: why the voting is won, not final or lost.
    message: str

    @property
    def won(self) -> bool:
        return self.outcome is Outcome.WON


def format_tally(tally: Sequence[tuple[int, str]]) -> str:
    """The tally as Ganeti prints it: ``[(2,"node1"),(1,"node2")]``."""
    return "[" + ",".join(f"({count},{json.dumps(name)})" for count, name in tally) + "]"


def decide(votes: Sequence[Vote], my_name: str) -> VotingResult:
    """Ganeti's verdict on one round of votes (see the module docstring)."""
    valid = [answer for _, answer in votes if answer is not None]
    missing = tuple(voter for voter, answer in votes if answer is None)
    voters = len(votes)
    in_favour = sum(1 for answer in valid if answer == my_name)
    tally = tuple(sorted(((count, name) for name, count in Counter(valid).items()), key=lambda item: item[1]))
    if 2 * in_favour > voters:
        outcome = Outcome.WON
        message = f"{my_name} won the master voting: {in_favour} of {voters} nodes name it"
    elif 2 * (in_favour + len(missing)) > voters:
        outcome = Outcome.UNDECIDED
        message = (f"Voting not final due to missing votes: {in_favour} of {voters} nodes name {my_name},"
                   f" no answer from {', '.join(missing)}")
    else:
        outcome = Outcome.LOST
        message = f"Voting cannot be won by {my_name}, valid votes of {voters} are {format_tally(tally)}"
    return VotingResult(outcome=outcome, my_name=my_name, voters=voters, in_favour=in_favour,
                        missing=missing, tally=tally, message=message)


async def gather_votes(nodes: Sequence[str], rpc: MasterNameAsker) -> list[Vote]:
    """Ask every node (each once, in the given order) which node is the master."""
    unique = list(dict.fromkeys(nodes))
    if not unique:
        return []
    answers = await rpc.master_node_name(unique)
    votes: list[Vote] = []
    for node in unique:
        answer, failure = answers.get(node, (None, "no answer"))
        if failure is not None:
            log.warning("no voting result from node %s: %s", node, failure)
        votes.append((node, answer if failure is None else None))
    return votes


def single_node(nodes: Sequence[str], my_name: str) -> bool:
    """Whether the node list is just this node (or empty): nobody else to ask."""
    return set(nodes) <= {my_name}


async def verify_master(nodes: Sequence[str], rpc: MasterNameAsker, my_name: str,
                        retries: int = MASTER_VOTING_RETRIES,
                        interval: float = MASTER_VOTING_RETRY_INTERVAL,
                        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> VotingResult:
    """Vote until the result is final, at most `retries` more rounds `interval` seconds apart.

    A voting still not final after the last round comes back UNDECIDED with
    "Couldn't gather voting results of enough nodes" in its message.
    """
    if single_node(nodes, my_name):
        return VotingResult(outcome=Outcome.WON, my_name=my_name, voters=1, in_favour=1, missing=(),
                            tally=((1, my_name),),
                            message=f"single-node cluster: {my_name} is the master by its own vote")
    left = retries
    while True:
        result = decide(await gather_votes(nodes, rpc), my_name)
        log.info("master voting: %s", result.message)
        if result.outcome is not Outcome.UNDECIDED:
            return result
        if left <= 0:
            return replace(result, message=f"Couldn't gather voting results of enough nodes"
                                           f" ({result.message}, after {retries + 1} rounds)")
        left -= 1
        await sleep(interval)
