"""Our gnt-* command-line tools: Ganeti 3.0's syntax, output and exit codes, speaking LUXI.

Modules (each with one job):
    errors       client-side exceptions (Ganeti's classes by name) and `format_error`,
                 the text and exit code Ganeti's cli.FormatError gives each
    luxi_client  LuxiClient: finds the socket through noded.paths.Paths, connects
                 by Ganeti's rules, frames requests, decodes answers and errors
    output       stdout/stderr writers, tables (FormatTable, FormatQueryResult), the
                 YAML-like info printer, time/unit/timespec formatting
    jobs         submitting opcodes and following jobs (SubmitOpCode, SubmitOrSend,
                 GenericPollJob with Ganeti's progress lines)
    command      the command framework: subcommands, optparse options, usage,
                 --version, running a command and turning errors into exit codes
    gnt_job, gnt_debug, gnt_cluster   the tools (console scripts of the same names)
"""
