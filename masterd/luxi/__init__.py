"""The LUXI door of the master daemon (Ganeti's Unix-socket JSON protocol).

- `masterd.luxi.protocol`: framing, request parsing, response and error encoding, the errors handlers raise.
- `masterd.luxi.methods`: the table of LUXI methods and argument shapes, the `LuxiHandler` protocol.
- `masterd.luxi.server`: `LuxiServer`, the asyncio Unix-socket server.
"""
