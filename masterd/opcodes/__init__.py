"""Opcode definitions of Ganeti 3.0.2 and the validation of submitted opcodes.

Modules:
    types     the parameter type trees, their checker and Ganeti-style descriptions
    validate  OpcodeDefinitions (opcodes.json), validate_opcode, validate_job, OpcodeError
"""

from masterd.opcodes.validate import OpcodeDefinitions, OpcodeError, validate_job, validate_opcode

__all__ = ["OpcodeDefinitions", "OpcodeError", "validate_job", "validate_opcode"]
