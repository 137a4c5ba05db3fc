"""Call a procedure on the real Ganeti 3.0.2 node daemon code and on ours, in the same shape.

The real call goes through Ganeti's own `NodeRequestHandler.perspective_<name>`
(the method its noded runs for `POST /<name>`), in a subprocess with the
system Python, in virtual-cluster mode on the test's node root. Both sides
answer `[true, payload]` or `[false, message]`, as on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from real_ganeti import run_real_ganeti

from noded.context import NodeContext
from noded.errors import RpcFail

BACKEND_ERROR_PREFIX = "Error while executing backend function: "

_PERSPECTIVE = """
import json, logging
logging.disable(logging.CRITICAL)
from ganeti import backend, errors
from ganeti.server import noded
args = json.loads({args!r})
try:
    result = [True, getattr(noded.NodeRequestHandler, "perspective_" + {name!r})(args)]
except backend.RPCFail as err:
    result = [False, str(err)]
except errors.QuitGanetiException as err:
    result = list(err.args)
except Exception as err:
    result = [False, "Error while executing backend function: %s" % err]
print(json.dumps(result))
"""


def real_call(root: Path, name: str, *args: Any) -> list[Any]:
    """`[ok, payload]` of the real Ganeti noded's procedure `name` on node root `root`."""
    script = _PERSPECTIVE.format(args=json.dumps(list(args)), name=name)
    out = run_real_ganeti(script, root=root, hostname=root.name)
    return list(json.loads(out.strip().splitlines()[-1]))


def real_snippet(root: Path, body: str) -> Any:
    """Run `body` (which must set `result`) with Ganeti importable; the JSON of `result`."""
    script = ("import json, logging\nlogging.disable(logging.CRITICAL)\n" + body +
              "\nprint(json.dumps(result))\n")
    out = run_real_ganeti(script, root=root, hostname=root.name)
    return json.loads(out.strip().splitlines()[-1])


def our_call(func: Callable[..., Any], ctx: NodeContext, *args: Any) -> list[Any]:
    """`[ok, payload]` of our backend function, as our daemon answers it."""
    try:
        result = func(ctx, *args)
    except RpcFail as err:
        return [False, err.message]
    except Exception as err:
        return [False, BACKEND_ERROR_PREFIX + str(err)]
    return [True, json.loads(json.dumps(result))]
