#!/usr/bin/env python3
"""Write tools/os/tiny/bootsector.bin: the 512-byte x86 boot sector of the `tiny` OS definition.

Run `python3 tools/os/make_bootsector.py` (or with `--check` to verify the
checked-in file is what this script makes). The BIOS loads the sector at
0000:7C00 and jumps to it in 16-bit real mode. The code sets up a stack,
prints three NUL-terminated strings on the first serial port (COM1, I/O
port 0x3F8, waiting for the transmitter holding register to be empty,
bit 5 of the line status register at 0x3FD, before each byte), then
disables interrupts and halts forever:

    GREETING            "ganeti-ng tiny OS booted: "
    NAME                the instance name, written by the `create` (and
                        `rename`) script at byte NAME_OFFSET; NUL-filled
                        here, so an unnamed sector prints the greeting alone
    CRLF                "\\r\\n"

The machine code is assembled by the few lines below (opcode bytes with
8/16-bit relative jump fix-ups), so no assembler is needed. Bytes 446-509
(the partition table) stay zero; bytes 510-511 are the boot signature
0x55 0xAA.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SECTOR_SIZE = 512
LOAD_ADDRESS = 0x7C00
GREETING = b"ganeti-ng tiny OS booted: "
CRLF = b"\r\n"
#: Where the message strings live in the sector (the create script knows NAME_OFFSET and NAME_SIZE).
GREETING_OFFSET = 0x40
CRLF_OFFSET = 0x70
NAME_OFFSET = 0x80
#: Bytes reserved for the name, including its terminating NUL (names are cut to NAME_SIZE - 1).
NAME_SIZE = 256
PARTITION_TABLE_OFFSET = 446
SIGNATURE = b"\x55\xaa"
COM1 = 0x3F8
COM1_LSR = COM1 + 5
LSR_THR_EMPTY = 0x20

OUTPUT = Path(__file__).resolve().parent / "tiny" / "bootsector.bin"


class Assembler:
    """Just enough of an assembler: raw bytes, labels and relative jump targets."""

    def __init__(self) -> None:
        self.code = bytearray()
        self.labels: dict[str, int] = {}
        #: (position of the displacement, its size in bytes, target label)
        self.fixups: list[tuple[int, int, str]] = []

    def emit(self, *data: int) -> None:
        self.code.extend(data)

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def imm16(self, value: int) -> None:
        self.emit(value & 0xFF, value >> 8)

    def rel(self, opcode: int, target: str, size: int) -> None:
        """An instruction `opcode` followed by a `size`-byte displacement to `target`."""
        self.emit(opcode)
        self.fixups.append((len(self.code), size, target))
        self.emit(*([0] * size))

    def assemble(self) -> bytes:
        for pos, size, target in self.fixups:
            disp = self.labels[target] - (pos + size)  # relative to the next instruction
            self.code[pos:pos + size] = disp.to_bytes(size, "little", signed=True)
        return bytes(self.code)


def code() -> bytes:
    """The boot code (starts at offset 0 of the sector)."""
    a = Assembler()
    a.emit(0xFA)                          # cli
    a.emit(0x31, 0xC0)                    # xor ax, ax
    a.emit(0x8E, 0xD8)                    # mov ds, ax
    a.emit(0x8E, 0xD0)                    # mov ss, ax
    a.emit(0xBC)                          # mov sp, 0x7C00 (stack grows down below the sector)
    a.imm16(LOAD_ADDRESS)
    a.emit(0xFC)                          # cld (lodsb walks forward)
    for offset in (GREETING_OFFSET, NAME_OFFSET, CRLF_OFFSET):
        a.emit(0xBE)                      # mov si, <string address>
        a.imm16(LOAD_ADDRESS + offset)
        a.rel(0xE8, "print", 2)           # call print
    a.label("halt")
    a.emit(0xFA)                          # cli
    a.emit(0xF4)                          # hlt
    a.rel(0xEB, "halt", 1)                # jmp halt
    a.label("print")                      # print the NUL-terminated string at ds:si on COM1
    a.emit(0xAC)                          # lodsb
    a.emit(0x84, 0xC0)                    # test al, al
    a.rel(0x74, "done", 1)                # jz done
    a.emit(0x88, 0xC3)                    # mov bl, al
    a.emit(0xBA)                          # mov dx, COM1_LSR
    a.imm16(COM1_LSR)
    a.label("wait")
    a.emit(0xEC)                          # in al, dx
    a.emit(0xA8, LSR_THR_EMPTY)           # test al, 0x20
    a.rel(0x74, "wait", 1)                # jz wait
    a.emit(0xBA)                          # mov dx, COM1
    a.imm16(COM1)
    a.emit(0x88, 0xD8)                    # mov al, bl
    a.emit(0xEE)                          # out dx, al
    a.rel(0xEB, "print", 1)               # jmp print
    a.label("done")
    a.emit(0xC3)                          # ret
    return a.assemble()


def bootsector() -> bytes:
    """The whole 512-byte sector."""
    body = code()
    if len(body) > GREETING_OFFSET:
        raise SystemExit(f"boot code is {len(body)} bytes, more than the {GREETING_OFFSET} reserved")
    sector = bytearray(SECTOR_SIZE)
    sector[:len(body)] = body
    for offset, text in ((GREETING_OFFSET, GREETING), (CRLF_OFFSET, CRLF)):
        sector[offset:offset + len(text)] = text  # the following zero byte terminates it
    sector[SECTOR_SIZE - len(SIGNATURE):] = SIGNATURE
    assert len(sector) == SECTOR_SIZE and NAME_OFFSET + NAME_SIZE <= PARTITION_TABLE_OFFSET
    return bytes(sector)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only verify that the checked-in file is up to date")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"where to write (default {OUTPUT})")
    args = parser.parse_args(argv)
    data = bootsector()
    if args.check:
        if not args.output.exists() or args.output.read_bytes() != data:
            print(f"{args.output} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
