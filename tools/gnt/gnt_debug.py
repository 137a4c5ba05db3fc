"""gnt-debug: the `delay` command (OP_TEST_DELAY), with Ganeti 3.0's options and output.

`gnt-debug delay [--submit] [--print-jobid] [-n NODE]... [--no-master] [-r N] [-i] [-l]
[--dry-run] [--priority P] <seconds>` submits OP_TEST_DELAY like the real tool
(cli-needs.md §5): without --submit it follows the job, printing its log lines,
and fails with the job's error; with --submit it prints "JobID: N" on stderr.
Ganeti's other gnt-debug commands answer "not implemented yet". Unlike Ganeti,
a duration that is not a number is refused with a message, not a traceback.
"""

from __future__ import annotations

from typing import Any

from tools.gnt.command import (
    DRY_RUN_OPT,
    EXIT_SUCCESS,
    PRIORITY_OPT,
    SUBMIT_OPTS,
    Args,
    Command,
    Context,
    generic_main,
    option,
)
from tools.gnt.errors import ECODE_INVAL, GanetiError
from tools.gnt.jobs import make_opcode, submit_or_send


def delay(ctx: Context, opts: Any, args: list[str]) -> int:
    try:
        duration = float(args[0])
    except ValueError:
        raise GanetiError("OpPrereqError", f"Invalid duration '{args[0]}': it must be a number of seconds",
                          ECODE_INVAL) from None
    op = make_opcode("OP_TEST_DELAY", duration=duration, on_master=opts.on_master, on_nodes=opts.on_nodes,
                     repeat=opts.repeat, interruptible=opts.interruptible, no_locks=opts.no_locks)
    submit_or_send(ctx.client(), op, opts, ctx.argv)
    return EXIT_SUCCESS


COMMANDS: dict[str, Command] = {
    "delay": Command(
        delay, [Args(min=1, max=1)],
        [option("--no-master", dest="on_master", default=True, action="store_false",
                help="Do not sleep in the master code"),
         option("-n", dest="on_nodes", default=[], action="append", help="Select nodes to sleep on"),
         option("-r", "--repeat", type="int", default="0", dest="repeat",
                help="Number of times to repeat the sleep"),
         option("-i", "--interruptible", default=False, dest="interruptible", action="store_true",
                help="Allows the opcode to be interrupted by using a domain socket"),
         option("-l", "--no-locks", default=False, dest="no_locks", action="store_true",
                help="Don't take locks while performing the delay"),
         DRY_RUN_OPT, PRIORITY_OPT, *SUBMIT_OPTS],
        "[<opts>...] <duration>", "Executes a TestDelay OpCode"),
}

#: Ganeti's other gnt-debug commands, not offered yet.
PLANNED = ("submit-job", "test-jobqueue", "test-osparams", "locks", "iallocator", "allocator")


def main() -> int:
    return generic_main(COMMANDS, planned=PLANNED)


if __name__ == "__main__":
    raise SystemExit(main())
